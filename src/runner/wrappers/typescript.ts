// flext-kubernetes TypeScript wrapper (Bun and Deno): Windmill's contract. Reads the args, calls
// the entrypoint with them positionally in the order its signature declares (names given by the
// runner), writes the JSON result; on an exception writes {name, message, stack} and exits 1.
// @ts-nocheck
const env = (name: string): string | undefined =>
  typeof Deno !== "undefined" ? Deno.env.get(name) : process.env[name];
const read = async (path: string): Promise<string> =>
  typeof Deno !== "undefined" ? await Deno.readTextFile(path) : await Bun.file(path).text();
const write = async (path: string, text: string): Promise<void> => {
  if (typeof Deno !== "undefined") await Deno.writeTextFile(path, text);
  else await Bun.write(path, text);
};
const exit = (code: number) => (typeof Deno !== "undefined" ? Deno.exit(code) : process.exit(code));

const resultPath = env("FLEXT_RESULT")!;
try {
  const args = JSON.parse(await read(env("FLEXT_ARGS")!));
  const names: string[] = JSON.parse(env("FLEXT_ARG_NAMES") ?? "[]");
  const entrypoint = env("FLEXT_ENTRYPOINT") || "main";
  const module = await import(env("FLEXT_MAIN")!);
  const fn = module[entrypoint];
  if (typeof fn !== "function") {
    throw new Error(`the script exports no function \`${entrypoint}\`; add \`export async function ${entrypoint}(...)\``);
  }
  const result = await fn(...names.map((n) => args[n]));
  await write(resultPath, JSON.stringify(result ?? null));
} catch (e) {
  console.error(e);
  const error = e instanceof Error
    ? { name: e.name, message: e.message, stack: e.stack ?? "" }
    : { name: "Error", message: String(e), stack: "" };
  await write(resultPath, JSON.stringify(error));
  exit(1);
}
