/**
 * Paths of an OCI bundle given to Task.Create, checked before anything is
 * mounted: the bundle must be a clean absolute path, and the rootfs mounts of
 * the request go to `<bundle>/rootfs`, as containerd's runc shim mounts them
 * (`filepath.Join(bundle, "rootfs")`, whatever the spec says). The spec's
 * `root.path` must then name that directory; one elsewhere (`../../x`, an
 * absolute path) would have the daemon mount over, and later unmount, a path
 * outside the bundle, so it is refused. Without rootfs mounts the daemon
 * mounts nothing and `root.path` is the runtime's business, as with
 * containerd (`ctr run --rootfs /some/dir` works that way).
 *
 * @module
 */
import { posix } from "node:path";
import { InvalidArgumentError } from "./errors.ts";

/** Returns `bundle` when it is a clean absolute path (no `.`, `..`, `//`), throws otherwise. */
export function validateBundlePath(bundle: string): string {
  if (!bundle.startsWith("/") || bundle.includes("\0")) {
    throw new InvalidArgumentError(
      `Invalid bundle ${JSON.stringify(bundle)}: not an absolute path`,
    );
  }
  const clean = posix.normalize(bundle).replace(/(.)\/$/, "$1");
  if (clean !== bundle.replace(/(.)\/$/, "$1") || clean === "/") {
    throw new InvalidArgumentError(
      `Invalid bundle ${JSON.stringify(bundle)}: not a clean path (say ${JSON.stringify(clean)})`,
    );
  }
  return clean;
}

/**
 * Where the rootfs mounts of Task.Create go: `<bundle>/rootfs`. Throws
 * INVALID_ARGUMENT when the spec's `root.path` (relative to the bundle, or
 * absolute) names another directory, since the container would not run on
 * the mounted rootfs and the daemon would touch a path it was not given.
 */
export function rootfsMountTarget(bundle: string, rootPath: string | undefined): string {
  const target = posix.join(bundle, "rootfs");
  const named = posix.resolve(bundle, rootPath ?? "rootfs");
  if (named !== target) {
    throw new InvalidArgumentError(
      `Invalid spec: root.path ${JSON.stringify(rootPath)} resolves to "${named}", but the ` +
        `rootfs mounts of Task.Create are mounted at the bundle's "${target}" ` +
        `(as containerd's runc shim does); set root.path to "rootfs"`,
    );
  }
  return target;
}

/**
 * Where the daemon may have mounted a container's rootfs: what it recorded,
 * or, for a Create cut short before its record was saved (recovery undoes
 * it), the only place rootfs mounts ever go. Undefined when it had none.
 */
export function ownRootfsTarget(
  bundle: string,
  rootfsMounts: number,
  recorded: string | undefined,
): string | undefined {
  if (recorded) return recorded;
  return rootfsMounts ? posix.join(bundle, "rootfs") : undefined;
}
