/**
 * The containerd harness on its own, without our sandboxer: a private containerd 2.4.2 with the
 * locally built images runs a busybox container through CRI on containerd's own runc shim, and
 * cleaning up leaves no mount, bridge or process behind. When the sandboxer e2e tests fail, this
 * tells whether the harness or the sandboxer is at fault.
 */
import assert from "node:assert/strict";
import { containerdUnavailable, mountsUnder, TestContainerd } from "../support/containerd.ts";
import { BUSYBOX_IMAGE, importTestImages, TEST_IMAGES } from "../support/images.ts";
import { skipUnless } from "../support/env.ts";

const skip = skipUnless(containerdUnavailable(), "containerd harness smoke test");

/** Polls `crictl inspect` until the container has exited; returns its status. */
async function waitExited(
  ctd: TestContainerd,
  id: string,
): Promise<{ state: string; exitCode: number }> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const s = JSON.parse(await ctd.crictlOk(["inspect", "--output", "json", id])) as {
      status: { state: string; exitCode?: number };
    };
    if (s.status.state === "CONTAINER_EXITED" || Date.now() > deadline) {
      return { state: s.status.state, exitCode: s.status.exitCode ?? 0 };
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

Deno.test({
  name: "containerd harness: runc handler runs a busybox container through crictl",
  ...skip,
  async fn() {
    const ctd = await TestContainerd.start({ images: false });
    const base = ctd.base;
    try {
      await importTestImages(ctd.ctrBin, ctd.address);
      const images = await ctd.crictlOk(["images", "--output", "json"]);
      const tags = (JSON.parse(images) as { images: { repoTags: string[] }[] }).images
        .flatMap((i) => i.repoTags);
      for (const name of TEST_IMAGES) assert.ok(tags.includes(name), `${name} in ${tags}`);

      const podJson = await ctd.writeJson("pod.json", {
        metadata: { name: "smoke", namespace: "default", uid: crypto.randomUUID(), attempt: 0 },
        log_directory: `${base}/logs/smoke`,
        linux: {},
      });
      const ctrJson = await ctd.writeJson("container.json", {
        metadata: { name: "echo" },
        image: { image: BUSYBOX_IMAGE },
        command: ["sh", "-c", "echo hello from busybox; exit 3"],
        log_path: "echo.log",
        linux: {},
      });
      const pod = await ctd.crictlOk(["runp", podJson]);
      assert.match(pod, /^[0-9a-f]{64}$/);
      const podStatus = JSON.parse(await ctd.crictlOk(["inspectp", "--output", "json", pod])) as {
        status: { state: string; network: { ip: string } };
      };
      assert.equal(podStatus.status.state, "SANDBOX_READY");
      assert.ok(
        podStatus.status.network.ip.startsWith(ctd.subnet.replace(/0\/24$/, "")),
        `pod ip ${podStatus.status.network.ip} in ${ctd.subnet}`,
      );

      const cid = await ctd.crictlOk(["create", pod, ctrJson, podJson]);
      await ctd.crictlOk(["start", cid]);
      assert.deepEqual(await waitExited(ctd, cid), { state: "CONTAINER_EXITED", exitCode: 3 });
      const logs = await ctd.crictl(["logs", cid]);
      assert.equal(logs.code, 0, logs.stderr);
      assert.equal(logs.stdout, "hello from busybox\n");

      await ctd.crictlOk(["rmp", "--all", "--force"]);
      assert.equal(await ctd.crictlOk(["pods", "--quiet"]), "");
      assert.equal(await ctd.crictlOk(["ps", "--all", "--quiet"]), "");
    } catch (e) {
      console.error(
        `containerd log tail:\n${(await ctd.logs()).split("\n").slice(-80).join("\n")}`,
      );
      throw e;
    } finally {
      await ctd.cleanup();
    }
    assert.deepEqual(await mountsUnder(base), []);
    await assert.rejects(Deno.stat(base), Deno.errors.NotFound);
    const link = await new Deno.Command("ip", {
      args: ["link", "show", ctd.bridge],
      stderr: "null",
    })
      .output();
    assert.equal(link.success, false, `bridge ${ctd.bridge} still exists`);
  },
});
