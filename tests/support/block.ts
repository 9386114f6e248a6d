/**
 * Block devices for volume tests: ext4 images (filled from a directory with
 * `mkfs.ext4 -d`), loop devices over images, and reading a file back out of
 * an image without mounting it (debugfs).
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";

const td = new TextDecoder();

async function run(argv: string[]): Promise<string> {
  const r = await new Deno.Command(argv[0], { args: argv.slice(1), stdin: "null" }).output();
  if (!r.success) throw new Error(`${argv.join(" ")}: ${td.decode(r.stderr)}`);
  return td.decode(r.stdout);
}

/** Why block tests cannot run here, or undefined. */
export function blockToolsMissing(): string | undefined {
  for (const tool of ["mkfs.ext4", "losetup", "debugfs"]) {
    const found = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].some((d) => {
      try {
        return Deno.statSync(`${d}/${tool}`).isFile;
      } catch {
        return false;
      }
    });
    if (!found) return `${tool} is not installed (e2fsprogs, util-linux)`;
  }
  return undefined;
}

/** An ext4 image of `sizeMiB`, holding `fromDir`'s files when given. */
export async function ext4Image(path: string, sizeMiB: number, fromDir?: string): Promise<string> {
  const f = await Deno.open(path, { create: true, write: true, truncate: true });
  await f.truncate(sizeMiB << 20);
  f.close();
  await run(["mkfs.ext4", "-q", "-F", ...(fromDir ? ["-d", fromDir] : []), path]);
  return path;
}

/** A loop device over `image`, with its numbers. */
export interface LoopDevice {
  readonly path: string;
  readonly major: number;
  readonly minor: number;
  detach(): Promise<void>;
}

/** Attaches `image` to a free loop device. */
export async function loopDevice(image: string): Promise<LoopDevice> {
  const path = (await run(["losetup", "-f", "--show", image])).trim();
  const name = path.slice(path.lastIndexOf("/") + 1);
  const [major, minor] = (await Deno.readTextFile(`/sys/block/${name}/dev`)).trim().split(":")
    .map(Number);
  return {
    path,
    major,
    minor,
    detach: async () => {
      await run(["losetup", "-d", path]).catch(() => {});
    },
  };
}

/** A file's content inside an ext4 image (no mount). */
export async function catInImage(image: string, file: string): Promise<string> {
  return await run(["debugfs", "-R", `cat ${file}`, image]);
}

/**
 * What a container does with the block fixtures: reads the volume's file and the raw
 * device's first bytes, writes a file to the volume and bytes into the device.
 */
export const BLOCK_IO_SCRIPT = "cat /data/hello.txt; echo written-in-the-vm > /data/out.txt; " +
  "head -c 9 /dev/xvdb; echo; " +
  "printf raw-write | dd of=/dev/xvdb bs=1 seek=100 conv=notrunc 2>/dev/null; sync";

/** The output BLOCK_IO_SCRIPT gives in a container that has both. */
export const BLOCK_IO_OUTPUT = "from-the-host-disk\nraw-bytes\n";

/** A volume (ext4 with hello.txt) and a raw device (starting "raw-bytes"), on loop devices. */
export async function blockFixtures(dir: string) {
  const files = join(dir, "vol-files");
  await Deno.mkdir(files, { recursive: true });
  await Deno.writeTextFile(join(files, "hello.txt"), "from-the-host-disk\n");
  const volImage = await ext4Image(join(dir, "vol.img"), 32, files);
  const rawImage = join(dir, "raw.img");
  const raw = new Uint8Array(4 << 20);
  raw.set(new TextEncoder().encode("raw-bytes"));
  await Deno.writeFile(rawImage, raw);
  const vol = await loopDevice(volImage);
  const rawDev = await loopDevice(rawImage).catch(async (e) => {
    await vol.detach();
    throw e;
  });
  return {
    vol,
    rawDev,
    release: async () => {
      await vol.detach();
      await rawDev.detach();
    },
    /** What BLOCK_IO_SCRIPT wrote is on the host's images. */
    assertWritten: async () => {
      assert.equal(await catInImage(volImage, "/out.txt"), "written-in-the-vm\n");
      const after = await Deno.readFile(rawImage);
      assert.equal(new TextDecoder().decode(after.subarray(100, 109)), "raw-write");
    },
  };
}
