/**
 * The vmm sandboxer under real containerd 2.4 and crictl, unchanged (no
 * `extensions.tasks`): pods are QEMU VMs (TCG here), containers run in the
 * guest on its kernel, logs come through FIFOs or containerd's streaming IO,
 * exec works, a CNI pod's IP answers from the host, and pods survive a
 * sandboxer restart.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { containerdUnavailable } from "../support/containerd.ts";
import { has, skipUnless } from "../support/env.ts";
import { type E2E, fetchWhenUp, runContainer, waitState, withE2E } from "../support/e2e.ts";
import { leftovers } from "../support/leaks.ts";

const IMAGE = Deno.env.get("KUASAR_GUEST_IMAGE") ?? "/var/lib/kuasar/guest";

function vmUnavailable(): string | undefined {
  if (!has("qemu-system-x86_64")) return "qemu-system-x86_64 is not installed";
  try {
    Deno.statSync(join(IMAGE, "initramfs.img"));
  } catch {
    return `no guest image in ${IMAGE} (deno task guest-image builds it)`;
  }
  return undefined;
}

const skip = skipUnless(vmUnavailable() ?? containerdUnavailable(), "containerd + vmm sandboxer");

const CONFIG = [
  "[hypervisor]",
  `kernel_path = "${IMAGE}/vmlinuz"`,
  `initrd_path = "${IMAGE}/initramfs.img"`,
  "memory_in_mb = 512",
  "",
].join("\n");

function withVmm(fn: (e: E2E) => Promise<void>): Promise<void> {
  return withE2E("vmm", fn, { config: CONFIG });
}

async function logsOf(e: E2E, cid: string, want: RegExp): Promise<string> {
  let text = "";
  for (let i = 0; i < 50 && !want.test(text); i++) {
    text = (await e.ctd.crictl(["logs", cid])).stdout;
    if (!want.test(text)) await new Promise((r) => setTimeout(r, 100));
  }
  return text;
}

for (const io of ["fifo", "stream"] as const) {
  Deno.test({
    name:
      `crictl + vmm (${io} IO): the guest's kernel, logs, exit code, exec, stats, stop, removal`,
    ...skip,
    fn: () =>
      withVmm(async (e) => {
        const { ctd } = e;
        const handler = io === "fifo" ? e.fifo : e.stream;
        const once = await runContainer(e, handler, ["sh", "-c", "echo hello; uname -r; exit 3"]);
        assert.deepEqual(await waitState(e, once.cid, "CONTAINER_EXITED", 60_000), {
          state: "CONTAINER_EXITED",
          exitCode: 3,
        });
        const logs = await logsOf(e, once.cid, /cloud-amd64/);
        assert.match(logs, /^hello\n/);
        assert.match(logs, /cloud-amd64/, "the guest's kernel");
        assert.doesNotMatch(logs, new RegExp(Deno.osRelease().replaceAll(".", "\\.")));

        const { pod, cid } = await runContainer(e, handler, [
          "sh",
          "-c",
          "trap 'echo bye; exit 5' TERM; while :; do sleep 0.2; done",
        ]);
        await waitState(e, cid, "CONTAINER_RUNNING", 60_000);
        const sync = await ctd.crictl(["exec", "-s", cid, "sh", "-c", "echo in-$(hostname)"]);
        assert.equal(sync.code, 0, sync.stderr);
        assert.match(sync.stdout.trim(), /^in-pod\d+$/);
        const failing = await ctd.crictl(["exec", "-s", cid, "sh", "-c", "exit 6"]);
        assert.match(failing.stderr, /exited with 6/);
        const input = await ctd.crictl(["exec", "-i", cid, "cat"], { stdin: "via-stdin\n" });
        assert.equal(input.stdout, "via-stdin\n", input.stderr);
        const stats = JSON.parse(await ctd.crictlOk(["stats", "--output", "json", "--id", cid]));
        assert.ok(Number(stats.stats[0].memory.workingSetBytes.value) > 0);

        await ctd.crictlOk(["stop", "--timeout", "10", cid]);
        assert.deepEqual(await waitState(e, cid, "CONTAINER_EXITED"), {
          state: "CONTAINER_EXITED",
          exitCode: 5,
        });
        assert.match(await logsOf(e, cid, /bye/), /bye/);
        await ctd.crictlOk(["rmp", "--all", "--force"]);
        assert.equal(await ctd.crictlOk(["pods", "--quiet"]), "");
        assert.deepEqual(await leftovers(e.d, [pod, once.pod]), []);
      }),
  });
}

Deno.test({
  name: "crictl + vmm: a CNI pod's IP answers from the host; pods survive a sandboxer restart",
  ...skip,
  fn: () =>
    withVmm(async (e) => {
      const { ctd } = e;
      const web = await runContainer(e, e.fifo, [
        "sh",
        "-c",
        "mkdir -p /www && echo vm-page > /www/index.html && httpd -f -p 8080 -h /www",
      ]);
      await waitState(e, web.cid, "CONTAINER_RUNNING", 60_000);
      const ip =
        JSON.parse(await ctd.crictlOk(["inspectp", "--output", "json", web.pod])).status.network.ip;
      const get = () => fetchWhenUp(`http://${ip}:8080/`);
      assert.equal(await get(), "vm-page\n");

      await e.d.kill9();
      await e.d.spawn();
      let state = "";
      for (let i = 0; i < 50 && state !== "SANDBOX_READY"; i++) {
        const r = await ctd.crictl(["inspectp", "--output", "json", web.pod]);
        state = r.code === 0 ? JSON.parse(r.stdout).status.state : "";
        if (state !== "SANDBOX_READY") await new Promise((res) => setTimeout(res, 200));
      }
      assert.equal(state, "SANDBOX_READY");
      assert.equal((await waitState(e, web.cid, "CONTAINER_RUNNING")).state, "CONTAINER_RUNNING");
      const r = await ctd.crictl(["exec", "-s", web.cid, "sh", "-c", "echo still-here"]);
      assert.equal(r.stdout.trim(), "still-here", r.stderr);
      assert.equal(await get(), "vm-page\n");
      await ctd.crictlOk(["rmp", "--all", "--force"]);
      assert.deepEqual(await leftovers(e.d, [web.pod]), []);
    }),
});
