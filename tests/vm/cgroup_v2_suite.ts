/**
 * The runC sandboxer's tests that touch cgroups, bundled (`deno bundle`) and
 * run by `deno test` inside a VM whose kernel mounts cgroup v2 only: pod and
 * container lifecycle, exec, pids, Metrics (v2), Update (memory.max),
 * pause/resume (cgroup.freeze), OOM kills (memory.events), Controller.Stop.
 * tests/integration/cgroup_v2_vm_test.ts boots the VM. Not a test file itself.
 *
 * @module
 */
import "../integration/runc_lifecycle_test.ts";
import "../integration/runc_task_api_test.ts";
