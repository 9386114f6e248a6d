/**
 * OCI bundles as containerd hands them to Task.Create.
 *
 * @module
 */
import { join } from "node:path";
import { InvalidArgumentError } from "../../domain/errors.ts";
import type { OciSpec } from "../../domain/oci.ts";

/** Reads `<bundle>/config.json`; INVALID_ARGUMENT when it is missing or not JSON. */
export async function readSpec(bundle: string): Promise<OciSpec> {
  let text: string;
  try {
    text = await Deno.readTextFile(join(bundle, "config.json"));
  } catch (e) {
    throw new InvalidArgumentError(
      `Invalid bundle "${bundle}": cannot read config.json: ${(e as Error).message}`,
    );
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new InvalidArgumentError(
      `Invalid bundle "${bundle}": config.json is not JSON: ${(e as Error).message}`,
    );
  }
}
