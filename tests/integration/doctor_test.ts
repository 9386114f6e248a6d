/**
 * `kuasar doctor` on this machine, as an operator runs it: against a running
 * sandboxer and containerd 2.4's config holding the documented drop-in it
 * passes; the gaps this machine really has (KVM, vhost-vsock) are named for
 * the vmm kind; a drop-in edited back to the README's old snippet fails with
 * the fix; the exit code follows.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { NodeCheck } from "../../src/domain/doctor.ts";
import { cpuHasVirtualization, vhostVsockPresent } from "../../src/adapters/doctor/probes.ts";
import { TOOLS_BIN } from "../support/containerd.ts";
import { TestDaemon } from "../support/daemon.ts";
import { containerdDropIn } from "../support/e2e.ts";
import { GUEST_IMAGE, runcUnavailable, skipUnless } from "../support/env.ts";

const MAIN = fileURLToPath(new URL("../../src/main.ts", import.meta.url));
const CONTAINERD = join(TOOLS_BIN, "containerd");

async function doctor(args: string[]): Promise<{ code: number; checks: NodeCheck[]; out: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-vsock", MAIN, "doctor", "--json", ...args],
  }).output();
  const out = new TextDecoder().decode(r.stdout);
  const err = new TextDecoder().decode(r.stderr);
  let checks: NodeCheck[] = [];
  try {
    checks = JSON.parse(out).checks;
  } catch {
    throw new Error(`doctor printed no JSON (exit ${r.code}): ${out}${err}`);
  }
  return { code: r.code, checks, out };
}

const status = (checks: NodeCheck[], id: string, kind?: string) =>
  checks.filter((c) => c.id === id && (kind === undefined || c.kind === kind)).map((c) => c.status);

Deno.test({
  name: "doctor: a runC sandboxer with containerd 2.4 and the documented drop-in passes",
  ...skipUnless(runcUnavailable(), "kuasar doctor with runc"),
  async fn() {
    const d = await TestDaemon.start();
    const conf = join(d.base, "containerd.toml");
    try {
      const dropIn = join(d.base, "kuasar-runc.toml");
      await Deno.writeTextFile(
        dropIn,
        await containerdDropIn("runc", d.listen, join(d.base, "bin")),
      );
      await Deno.writeTextFile(conf, `version = 3\nimports = [${JSON.stringify(dropIn)}]\n`);
      const args = [
        "--kind=runc",
        `--listen=${d.listen}`,
        `--dir=${d.dir}`,
        `--helper-dir=${join(d.base, "bin")}`,
        `--containerd=${CONTAINERD}`,
        `--containerd-config=${conf}`,
      ];
      const r = await doctor(args);
      const notOk = r.checks.filter((c) => c.status !== "ok" && c.id !== "cgroups");
      assert.deepEqual(notOk, [], r.out);
      assert.equal(r.code, 0);
      for (const id of ["engine", "socket", "state-dir", "containerd.proxy-plugin"]) {
        assert.deepEqual(status(r.checks, id, "runc"), ["ok"], id);
      }
      assert.deepEqual(status(r.checks, "containerd.handler", "runc"), ["ok", "ok"]);
      assert.match(r.checks.find((c) => c.id === "containerd")!.detail, /2\.4\./);

      // The README's old snippet: a runtime name on no PATH, and the pause image pulled.
      await Deno.writeTextFile(
        dropIn,
        (await Deno.readTextFile(dropIn))
          .replace(/runtime_type = "[^"]*"/g, 'runtime_type = "io.containerd.kuasar-runc.v1"')
          .replaceAll("disable_pause_image_pull = true", ""),
      );
      const bad = await doctor(args);
      assert.equal(bad.code, 1);
      const handlers = bad.checks.filter((c) => c.id === "containerd.handler");
      assert.equal(handlers.length, 2);
      for (const h of handlers) {
        assert.equal(h.status, "fail");
        assert.match(h.detail, /pause image/);
        assert.match(h.detail, /containerd-shim-kuasar-runc-v1 is on neither containerd's PATH/);
        assert.match(h.fix!, /absolute path/);
      }

      // Stopped: the socket is named, nothing else changes.
      await d.stop();
      const stopped = await doctor(args);
      assert.deepEqual(status(stopped.checks, "socket", "runc"), ["warn"]);
    } finally {
      await d.cleanup();
    }
  },
});

Deno.test("doctor: the vmm kind names this machine's gaps and passes the rest", async () => {
  const r = await doctor([
    "--kind",
    "vmm",
    `--containerd=${CONTAINERD}`,
    "--containerd-config=/nonexistent",
  ]);
  const kvm = r.checks.find((c) => c.id === "kvm");
  assert.ok(kvm, r.out);
  const hasVirt = cpuHasVirtualization(await Deno.readTextFile("/proc/cpuinfo"));
  if (!hasVirt) {
    assert.equal(kvm.status, "fail", r.out);
    assert.match(kvm.detail, /no vmx\/svm/);
  }
  assert.deepEqual(status(r.checks, "vhost-vsock"), [vhostVsockPresent() ? "ok" : "warn"]);
  const guest = (() => {
    try {
      return Deno.statSync(join(GUEST_IMAGE, "vmlinuz")).isFile;
    } catch {
      return false;
    }
  })();
  if (guest) assert.deepEqual(status(r.checks, "guest-kernel"), ["ok"]);
  // No sandboxer and no handler here: those are named too, and nothing else fails.
  const expected = new Set(["kvm", "vhost-vsock", "socket", "containerd.proxy-plugin", "cgroups"]);
  if (!guest) ["guest-kernel", "guest-initrd"].forEach((id) => expected.add(id));
  const unexpected = r.checks.filter((c) => c.status !== "ok" && !expected.has(c.id));
  assert.deepEqual(unexpected, [], r.out);
  assert.equal(r.code, r.checks.some((c) => c.status === "fail") ? 1 : 0);
});

Deno.test("doctor: flags for one sandboxer need one kind (exit 2); the text form lists fixes", async () => {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "doctor", "--listen", "/tmp/x.sock"],
  }).output();
  assert.equal(r.code, 2);
  assert.match(new TextDecoder().decode(r.stderr), /need exactly one --kind/);
  const t = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-vsock", MAIN, "doctor", "--kind", "quark"],
  }).output();
  const text = new TextDecoder().decode(t.stdout);
  assert.equal(t.code, 1, text);
  assert.match(text, /quark\s+FAIL\s+engine\s+.*\n\s+fix: install Quark/);
  assert.match(text, /\d+ ok, \d+ warnings, \d+ failed, \d+ skipped\n$/);
});
