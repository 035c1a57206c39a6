// flext-kubernetes TypeScript wrapper (Bun and Deno): Windmill's contract. Reads the args, calls
// the entrypoint with them positionally in the order its signature declares (names given by the
// runner), writes the JSON result; on an exception writes {name, message, stack} and exits 1.
// With FLEXT_PREPROCESS set, the script's exported `preprocessor` is called first (its parameters
// in their declared order) and what it returns (an object) becomes the entrypoint's args, written
// to FLEXT_PREPROCESSED_ARGS for Windmill.
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
  let args = JSON.parse(await read(env("FLEXT_ARGS")!));
  const names: string[] = JSON.parse(env("FLEXT_ARG_NAMES") ?? "[]");
  const entrypoint = env("FLEXT_ENTRYPOINT") || "main";
  const module = await import(env("FLEXT_MAIN")!);
  const fn = module[entrypoint];
  if (typeof fn !== "function") {
    throw new Error(`the script exports no function \`${entrypoint}\`; add \`export async function ${entrypoint}(...)\``);
  }
  if (env("FLEXT_PREPROCESS") && typeof module.preprocessor === "function") {
    const preNames: string[] = JSON.parse(env("FLEXT_PREPROCESSOR_ARG_NAMES") ?? "[]");
    args = await module.preprocessor(...preNames.map((n) => args[n]));
    if (args === null || typeof args !== "object" || Array.isArray(args)) {
      throw new TypeError("the preprocessor must return an object of the entrypoint's arguments");
    }
    await write(env("FLEXT_PREPROCESSED_ARGS")!, JSON.stringify(args));
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
