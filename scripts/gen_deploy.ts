// Writes deploy/: each kind's systemd unit, containerd 2.x drop-in and RuntimeClass, from
// src/daemon/deploy_files.ts (what `kuasar install` installs). tests/deploy_test.ts
// checks that the committed files are this output.
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { KINDS } from "../src/daemon/kinds.ts";
import { containerdDropIn, runtimeClass, systemdUnit } from "../src/daemon/deploy_files.ts";

const deploy = fileURLToPath(new URL("../deploy", import.meta.url));
await Deno.mkdir(join(deploy, "containerd"), { recursive: true });
await Deno.mkdir(join(deploy, "kubernetes"), { recursive: true });
for (const kind of KINDS) {
  await Deno.writeTextFile(join(deploy, `kuasar-${kind.name}.service`), systemdUnit(kind));
  await Deno.writeTextFile(
    join(deploy, "containerd", `kuasar-${kind.name}.toml`),
    containerdDropIn(kind),
  );
  await Deno.writeTextFile(
    join(deploy, "kubernetes", `runtimeclass-${kind.name}.yaml`),
    runtimeClass(kind),
  );
}
console.log(`wrote deploy/ for ${KINDS.map((k) => k.name).join(", ")}`);
