# flext-kubernetes Python wrapper: Windmill's contract. Reads the args, calls the entrypoint with
# them as keyword arguments, writes the JSON result; on an exception writes {name, message, stack}
# and exits 1. With FLEXT_PREPROCESS set, the script's `preprocessor` is called first with the
# args, and what it returns (an object) becomes the entrypoint's args, written to
# FLEXT_PREPROCESSED_ARGS for Windmill. Paths come from the runner through the environment.
import importlib.util
import json
import os
import sys
import traceback


def _write(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, default=str)


def _run():
    main_path = os.environ["FLEXT_MAIN"]
    result_path = os.environ["FLEXT_RESULT"]
    entrypoint = os.environ.get("FLEXT_ENTRYPOINT") or "main"
    with open(os.environ["FLEXT_ARGS"], encoding="utf-8") as f:
        args = json.load(f)
    sys.path.insert(0, os.path.dirname(main_path))
    try:
        spec = importlib.util.spec_from_file_location("main", main_path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["main"] = module
        spec.loader.exec_module(module)
        function = getattr(module, entrypoint, None)
        if function is None:
            raise AttributeError(f"the script has no function `{entrypoint}`; define `def {entrypoint}(...)`")
        preprocessor = getattr(module, "preprocessor", None)
        if os.environ.get("FLEXT_PREPROCESS") and callable(preprocessor):
            args = preprocessor(**args)
            if not isinstance(args, dict):
                raise TypeError(f"the preprocessor must return a dict of the entrypoint's arguments, not {type(args).__name__}")
            _write(os.environ["FLEXT_PREPROCESSED_ARGS"], args)
        result = function(**args)
        _write(result_path, result)
    except BaseException as e:  # noqa: BLE001 - every failure must reach Windmill
        sys.stdout.flush()
        traceback.print_exc()
        _write(result_path, {"name": type(e).__name__, "message": str(e), "stack": traceback.format_exc()})
        sys.exit(1)


_run()
