/**
 * Version of this build. `scripts/compile.ts` and `scripts/bundle.ts` stamp
 * the git description and build time into `src/gen/build_info.ts`; running
 * from source reports the package version.
 *
 * @module
 */
import info from "../../deno.json" with { type: "json" };

/** The version string, like Kuasar's `Version:` line. */
export const VERSION: string = info.version;

/**
 * When this build was made. Bundles and compiled binaries get the real time
 * stamped in by scripts/bundle.ts (it replaces this exact literal).
 */
export const BUILD_TIME: string = "unknown (run from source)";
