/**
 * Every sandbox kind this binary serves, by subcommand.
 *
 * @module
 */
import { gvisorKind } from "../adapters/gvisor/mod.ts";
import { vmmKind } from "../adapters/hypervisor/mod.ts";
import { quarkKind } from "../adapters/quark/mod.ts";
import { runcKind } from "../adapters/runc/mod.ts";
import { wasmKind } from "../adapters/wasm/mod.ts";
import type { HostKind } from "../adapters/kind_host.ts";

/** The kinds, in the order `--help` lists them. */
export const KINDS: readonly HostKind[] = [runcKind, wasmKind, gvisorKind, quarkKind, vmmKind];

/** The kind a binary name (argv[0] through a symlink) stands for. */
export function kindForBinaryName(name: string): HostKind | undefined {
  return KINDS.find((k) => k.binaryName === name);
}
