"""Record what llama.cpp's converter writes for each family, as test data (tests/data/llamacpp_keys.json).

    python scripts/llamacpp_keys.py --llama-dir path/to/llama.cpp [--archs qwen35,...] [--check]

For each architecture a tiny random checkpoint in the published shape (nextn_dev/published.py) is
converted by llama.cpp's own `convert_hf_to_gguf.py` (through scripts/llamacpp_convert.py) in the
bundled, --mtp and --no-mtp forms (DeepSeek-V3: --no-mtp only, its converter drops the MTP layer), and the
checkpoints of nextn_dev.interop.ROPE_CASES (a RoPE context extension) in the bundled form, keys only, and of
FP8_CASES (block-scaled FP8, as DeepSeek-V3 publishes it). Recorded per form: every metadata key with its value (token
lists and merges by count) and every tensor with its type, shape and a hash of its bytes. `--check` compares
`nextn convert` of the same checkpoints with the recording and prints the differences instead.
The tests compare nextn's converter with this recording without needing llama.cpp.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from nextn.gguf.convert import convert
from nextn_dev.interop import FP8_CASES, RECORDING, ROPE_CASES, differences, keys_only, recording, summary
from nextn_dev.published import to_fp8
from nextn_dev.tiny import ARCHS, MLA, make_checkpoint, scaled_rope

FORMS = {"bundled": [], "mtp": ["--mtp"], "no-mtp": ["--no-mtp"]}
# llama.cpp's converter drops DeepSeek-V3's MTP layer (skip_mtp) and refuses --mtp / --no-mtp for it: its plain
# output is the trunk-only form
ONLY = {"deepseek2": ("no-mtp",)}
FLAGS = {("deepseek2", "no-mtp"): []}


def llamacpp_convert(llama_dir: Path, hf: Path, out: Path, form: str, arch: str = "") -> Path:
    cmd = [sys.executable, str(Path(__file__).with_name("llamacpp_convert.py")), "--llama-dir", str(llama_dir),
           str(hf), "--outfile", str(out), "--outtype", "f32", *FLAGS.get((arch, form), FORMS[form])]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"llama.cpp's converter failed on {hf} ({form}):\n{proc.stderr[-3000:]}")
    return out


def versions(llama_dir: Path) -> dict:
    """Where the converter came from (the source tree's directory names say which release), and the
    transformers it normalised configs with (llama.cpp loads config.json through AutoConfig)."""
    import transformers

    return {"llama.cpp": str(llama_dir.relative_to(llama_dir.parents[2])) if llama_dir.parent.name == "vendor"
            else llama_dir.name, "transformers": transformers.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-dir", required=True)
    ap.add_argument("--archs", default=",".join(ARCHS + MLA))
    ap.add_argument("--check", action="store_true", help="compare nextn convert with the recording")
    args = ap.parse_args()
    llama = Path(args.llama_dir).resolve()
    record = recording() if RECORDING.exists() else {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for arch in [a for a in args.archs.split(",") if a]:
            hf = make_checkpoint(tmp / arch, arch, published=True)
            for form in ONLY.get(arch, FORMS):
                if args.check:
                    ours = summary(convert(hf, tmp / f"nx-{arch}-{form}.gguf", outtype="f32",
                                           mode=form, progress=False))
                    found = differences(record["archs"][arch][form], ours)
                    print(f"{arch} {form}: " + ("\n  ".join(["differs:"] + found) if found else "same"))
                else:
                    out = llamacpp_convert(llama, hf, tmp / f"ll-{arch}-{form}.gguf", form, arch)
                    record.setdefault("archs", {}).setdefault(arch, {})[form] = summary(out)
                    print(f"{arch} {form}: recorded {len(record['archs'][arch][form]['keys'])} keys")
        for name, (arch, block) in FP8_CASES.items():
            hf = to_fp8(make_checkpoint(tmp / f"{name}-src", arch, published=True), tmp / name, block=block)
            if args.check:
                ours = summary(convert(hf, tmp / f"nx-{name}.gguf", outtype="f32", mode="no-mtp", progress=False))
                found = differences(record["fp8"][name], ours)
                print(f"{name}: " + ("\n  ".join(["differs:"] + found) if found else "same"))
            else:
                record.setdefault("fp8", {})[name] = summary(llamacpp_convert(llama, hf, tmp / f"ll-{name}.gguf",
                                                                              "no-mtp", arch))
                print(f"{name}: recorded")
        for name, (arch, scaling) in ROPE_CASES.items():
            hf = make_checkpoint(tmp / name, arch, published=True, rope=scaled_rope(arch, **scaling))
            if args.check:
                ours = keys_only(summary(convert(hf, tmp / f"nx-{name}.gguf", outtype="f32", progress=False)))
                found = differences(record["rope"][name], ours)
                print(f"{name}: " + ("\n  ".join(["differs:"] + found) if found else "same"))
            else:
                record.setdefault("rope", {})[name] = keys_only(summary(llamacpp_convert(
                    llama, hf, tmp / f"ll-{name}.gguf", "bundled", arch)))
                print(f"{name}: recorded")
    if not args.check:
        record["converter"] = versions(llama)
        RECORDING.parent.mkdir(parents=True, exist_ok=True)
        RECORDING.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        print(f"wrote {RECORDING}")


if __name__ == "__main__":
    main()
