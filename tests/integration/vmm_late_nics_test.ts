/**
 * More interfaces appear in a VM pod's netns after start than the VM has NIC hot-plug slots:
 * those that fit are plugged and configured, the rest refused at every Create, never skipped.
 */
import assert from "node:assert/strict";
import { skipUnless, TEST_VMM, vmUnavailable } from "../support/env.ts";
import { fileURLToPath } from "node:url";
import { K8S_NS, startVmmDaemon, taskClient, type TestDaemon } from "../support/daemon.ts";
import { createContainer, startPod } from "../support/pod.ts";

const MAIN = fileURLToPath(new URL("../../src/main.ts", import.meta.url));

async function ctlExec(d: TestDaemon, pod: string, script: string) {
  const r = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      MAIN,
      "ctl",
      "-k",
      "vmm",
      "-l",
      d.listen,
      "-d",
      d.dir,
      "exec",
      pod,
      "--",
      script,
    ],
    stdin: "null",
  }).output();
  const td = new TextDecoder();
  return td.decode(r.stdout) + td.decode(r.stderr);
}

Deno.test({
  name:
    "vmm: interfaces beyond the NIC hot-plug slots are refused at every Create; those that fit work",
  ...skipUnless(Deno.uid() !== 0 ? "needs root" : vmUnavailable(), `vmm sandboxer on ${TEST_VMM}`),
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const tag = crypto.randomUUID().slice(0, 6);
    const ns = `k-att-${tag}`;
    const ip = async (...args: string[]) => {
      const r = await new Deno.Command("ip", { args, stderr: "piped" }).output();
      if (!r.success) {
        throw new Error(`ip ${args.join(" ")}: ${new TextDecoder().decode(r.stderr)}`);
      }
    };
    await ip("netns", "add", ns);
    const d = await startVmmDaemon();
    try {
      for (const [i, name] of [[0, "eth0"]] as const) {
        await ip("link", "add", `va${i}${tag}`, "type", "veth", "peer", "name", name, "netns", ns);
        await ip("-n", ns, "addr", "add", `10.240.${i}.2/24`, "dev", name);
        await ip("-n", ns, "link", "set", name, "up");
      }
      const pod = await startPod(d, { netnsPath: `/var/run/netns/${ns}` });
      for (const [i, name] of [[1, "eth1"], [2, "eth2"]] as const) {
        await ip("link", "add", `va${i}${tag}`, "type", "veth", "peer", "name", name, "netns", ns);
        await ip("-n", ns, "addr", "add", `10.240.${i}.2/24`, "dev", name);
        await ip("-n", ns, "link", "set", name, "up");
      }
      const tryCreate = async () => {
        try {
          const c = await createContainer(d, pod, { args: ["true"] });
          const t = await taskClient(pod.address);
          await t.task.delete({ id: c.id, execId: "" }, K8S_NS).catch(() => {});
          t.close();
          return "created";
        } catch (e) {
          return String(e);
        }
      };
      const first = await tryCreate();
      assert.match(first, /ResourceExhausted.*"eth2"/);
      const second = await tryCreate();
      assert.match(second, /ResourceExhausted.*"eth2"/, "still refused, not skipped");
      const guest = await ctlExec(d, pod.id, "ip -o addr show");
      assert.match(
        guest,
        /eth1\s+inet 10\.240\.1\.2\/24/,
        "the interface that fitted is configured",
      );
      await d.controller.shutdown(pod.id);
    } finally {
      await d.cleanup();
      for (const i of [0, 1, 2]) {
        await new Deno.Command("ip", { args: ["link", "del", `va${i}${tag}`] }).output();
      }
      await new Deno.Command("ip", { args: ["netns", "del", ns] }).output();
    }
  },
});
