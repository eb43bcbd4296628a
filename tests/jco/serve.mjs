#!/usr/bin/env node
// Serves one wasi:http component under jco (Node.js): transpiles it with
// @bytecodealliance/jco into a directory, then serves its
// wasi:http/incoming-handler export with @bytecodealliance/preview2-shim's
// HTTPServer, as `jco serve` does, but with a chosen environment and chosen
// preopened directories instead of the whole host's.
//
//   node serve.mjs --wasm COMPONENT.wasm [--port P] [--host H]
//                  [--dir HOSTDIR::/GUESTDIR]... [--env NAME=VALUE]...
//                  [--out-dir DIR]
//
// --port 0 (the default) picks a free port. When ready it prints
// `Serving http://HOST:PORT` on stdout; the transpile time goes to stderr.
// The component sees only the --env variables (none by default) and only the
// --dir preopens (none by default). --out-dir keeps the transpiled files there
// (else a temporary directory, removed on exit).
//
// `npm ci` in this directory installs the pinned jco and preview2-shim.

import { rmSync } from "node:fs";
import { mkdtemp, mkdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, extname, join, resolve } from "node:path";
import process from "node:process";
import { fileURLToPath, pathToFileURL } from "node:url";

const USAGE =
  "usage: node serve.mjs --wasm COMPONENT.wasm [--port P] [--host H] " +
  "[--dir HOSTDIR::/GUESTDIR]... [--env NAME=VALUE]... [--out-dir DIR]";

function fail(message) {
  console.error(`serve.mjs: ${message}`);
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { port: 0, host: "127.0.0.1", dirs: [], env: {}, wasm: null, outDir: null };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) fail(`${flag} needs a value\n${USAGE}`);
      return argv[++i];
    };
    switch (flag) {
      case "--wasm":
        opts.wasm = resolve(value());
        break;
      case "--port": {
        const v = value();
        const port = Number(v);
        if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`--port ${v} is not a port`);
        opts.port = port;
        break;
      }
      case "--host":
        opts.host = value();
        break;
      case "--dir": {
        const v = value();
        const sep = v.indexOf("::");
        if (sep <= 0 || !v.slice(sep + 2).startsWith("/")) fail(`--dir ${v} is not HOSTDIR::/GUESTDIR`);
        opts.dirs.push([v.slice(sep + 2), resolve(v.slice(0, sep))]);
        break;
      }
      case "--env": {
        const v = value();
        const eq = v.indexOf("=");
        if (eq <= 0) fail(`--env ${v} is not NAME=VALUE`);
        opts.env[v.slice(0, eq)] = v.slice(eq + 1);
        break;
      }
      case "--out-dir":
        opts.outDir = resolve(value());
        break;
      case "-h":
      case "--help":
        console.log(USAGE);
        process.exit(0);
      default:
        fail(`unknown argument ${flag}\n${USAGE}`);
    }
  }
  if (!opts.wasm) fail(`--wasm is required\n${USAGE}`);
  return opts;
}

/// The root directory of an installed package of this runner (through its
/// package.json, which every package exports or not, found by walking up from
/// its main entry).
function packageRoot(name) {
  let dir = dirname(fileURLToPath(import.meta.resolve(name)));
  while (basename(dir) !== name.split("/").pop()) {
    const up = dirname(dir);
    if (up === dir) throw new Error(`cannot find the root of ${name}`);
    dir = up;
  }
  return dir;
}

async function loadJco() {
  try {
    return await import("@bytecodealliance/jco");
  } catch (e) {
    fail(
      `cannot load @bytecodealliance/jco (${e.code ?? e.message}): run \`npm ci\` in ${dirname(
        fileURLToPath(import.meta.url),
      )}`,
    );
  }
}

const opts = parseArgs(process.argv.slice(2));
const { transpile } = await loadJco();

let component;
try {
  component = await readFile(opts.wasm);
} catch (e) {
  fail(`cannot read ${opts.wasm}: ${e.message}`);
}

const ownOutDir = !opts.outDir;
const outDir = opts.outDir ?? (await mkdtemp(join(tmpdir(), "s3m-jco-")));
await mkdir(outDir, { recursive: true });
// Synchronous: it runs from the exit handler.
const cleanup = () => {
  if (ownOutDir) rmSync(outDir, { recursive: true, force: true });
};
process.on("exit", cleanup);
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(signal, () => process.exit(0));
}

const name = basename(opts.wasm, extname(opts.wasm)).replace(/[^A-Za-z0-9_-]/g, "_") || "component";
const started = process.hrtime.bigint();
let files;
try {
  ({ files } = await transpile(component, {
    name,
    quiet: true,
    noTypescript: true,
    wasiShim: true,
  }));
} catch (e) {
  console.error(`serve.mjs: jco cannot transpile ${opts.wasm}:`);
  console.error(e);
  process.exit(1);
}
const transpileMs = Number(process.hrtime.bigint() - started) / 1e6;
for (const [file, bytes] of Object.entries(files)) {
  const path = join(outDir, file);
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, bytes);
}
await writeFile(join(outDir, "package.json"), JSON.stringify({ type: "module" }));
// The transpiled code imports @bytecodealliance/preview2-shim/*: resolve it to
// the very copy this runner configures (Node resolves the link to its real path,
// so both see one module instance).
const modulesDir = join(outDir, "node_modules", "@bytecodealliance");
await mkdir(modulesDir, { recursive: true });
await rm(join(modulesDir, "preview2-shim"), { recursive: true, force: true });
await symlink(packageRoot("@bytecodealliance/preview2-shim"), join(modulesDir, "preview2-shim"), "dir");
console.error(
  `serve.mjs: transpiled ${opts.wasm} (${(component.length / 1024).toFixed(0)} KiB) in ${transpileMs.toFixed(0)} ms`,
);

// The component's world: only these variables, only these directories.
const { _setEnv, _setArgs, _setCwd } = await import("@bytecodealliance/preview2-shim/cli");
const { _setPreopens, _addPreopen } = await import("@bytecodealliance/preview2-shim/filesystem");
_setEnv(opts.env);
_setArgs([name]);
_setCwd(undefined);
_setPreopens({});
for (const [guest, host] of opts.dirs) _addPreopen(guest, host);

const { HTTPServer } = await import("@bytecodealliance/preview2-shim/http");
const instantiated = Number(process.hrtime.bigint());
const mod = await import(pathToFileURL(join(outDir, `${name}.js`)).href);
const handler = mod.incomingHandler ?? mod["wasi:http/incoming-handler@0.2.0"];
if (typeof handler?.handle !== "function") {
  fail(`${opts.wasm} exports no wasi:http/incoming-handler (exports: ${Object.keys(mod).join(", ")})`);
}
console.error(
  `serve.mjs: instantiated in ${((Number(process.hrtime.bigint()) - instantiated) / 1e6).toFixed(0)} ms`,
);
const server = new HTTPServer(handler);
server.listen(opts.port, opts.host);
const address = await server.address();
const port = address?.port ?? opts.port;
console.log(`Serving http://${opts.host}:${port}`);
