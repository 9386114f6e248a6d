/**
 * The node's platform as containerd names it.
 *
 * @module
 */

/** Go's name for the host architecture, as containerd's platforms use it. */
export function goArch(): string {
  return ({ x86_64: "amd64", aarch64: "arm64" } as Record<string, string>)[Deno.build.arch] ??
    Deno.build.arch;
}
