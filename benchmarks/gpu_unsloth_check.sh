#!/usr/bin/env bash
# The Unsloth path on a real NVIDIA GPU: a 20-step `charlite train beethoven --engine unsloth`
# on a small dataset, then the same with `--engine peft` for comparison, and the figures; then
# Unsloth on a tiny model of each architecture (llama ... phi3) and one 4-bit load.
# Installs nothing: run it where torch (CUDA build), unsloth and charlite are already installed.
#
#   PYTHON=.venv/bin/python benchmarks/gpu_unsloth_check.sh
#
# Exit status: 0 all checks passed, 1 a check failed, 2 this machine cannot run it.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
STEPS="${STEPS:-20}"
START=$(date +%s)
export CHARLITE_HOME="${CHARLITE_HOME:-$(mktemp -d -t charlite-gpu-XXXXXX)}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
echo "CHARLITE_HOME=$CHARLITE_HOME  python=$PY  steps=$STEPS"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

"$PY" - <<'EOF' || exit 2
import importlib.metadata as md, sys
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if not torch.cuda.is_available():
    sys.exit("no CUDA GPU visible to torch (a CPU build of torch?)")
print("gpu", torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported())
for name in ("unsloth", "transformers", "peft", "trl", "bitsandbytes", "accelerate"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "NOT INSTALLED")
        if name in ("unsloth", "bitsandbytes"):
            sys.exit(f"{name} is not installed here; this check installs nothing")
EOF

# A small dataset written directly as Experience records: a made-up favourite colour.
"$PY" - <<'EOF' || exit 1
from charlite.experience.schemas import Experience
from charlite.files import JsonlWriter
from charlite.home import CharacterPaths

fact = "periwinkle-vermilion"
questions = ["What is your favourite colour?", "Which colour do you love most?",
             "Tell me, what colour pleases you best?", "Do you have a favourite colour?"]
answers = [f"My favourite colour is {fact}.", f"{fact.capitalize()}! Nothing else comes close.",
           f"It is {fact}, of course."]
folder = CharacterPaths.of("beethoven").dataset("default")
folder.mkdir(parents=True, exist_ok=True)
with JsonlWriter(folder / "experiences.jsonl") as out:
    for i in range(16):
        out.write(Experience(
            id=f"fact-{i}", location="Vienna, 1820", status="A visitor asks Beethoven about his tastes.",
            dialogue=[{"role": ["Man", "Visitor", "Schindler", "Karl"][i % 4], "content": questions[i % 4]},
                      {"role": "Beethoven", "action": "speaking", "content": answers[i % 3]}],
        ).model_dump(mode="json"))
print("dataset:", folder)
EOF

status=0
for engine in unsloth peft; do
  echo "== charlite train beethoven --engine $engine --max-steps $STEPS"
  SECONDS=0
  "$PY" -m charlite train beethoven --engine "$engine" --run "gpu-$engine" --max-steps "$STEPS" \
      --lr 2e-3 --warmup 0 --batch-size 2 --grad-accum 1 --max-seq-len 512 --logging-steps 1
  rc=$?
  echo "exit $rc, command wall time ${SECONDS} s"
  [ "$rc" -eq 0 ] || status=1
done

# Figures and checks from the runs' manifests; the unsloth adapter is loaded back with plain peft.
"$PY" - <<'EOF' || status=1
import json, sys
from charlite.train import load_run

ok = True
for engine in ("unsloth", "peft"):
    try:
        run = load_run("beethoven", f"gpu-{engine}")
    except Exception as exc:
        print(f"{engine}: no run ({exc})"); ok = False; continue
    m = run.manifest
    t = m.get("tokens", {})
    losses = [json.loads(l)["loss"] for l in run.metrics_path.read_text().splitlines()]
    rate = t.get("real", 0) / m["train_time_s"] if m.get("train_time_s") else 0
    print(f"{engine}: status {m['status']}, engine {m['engine']} on {m['device']} ({m['dtype']}), "
          f"steps {m['steps']}, loss {losses[0]:.3f} -> {losses[-1]:.3f}, "
          f"{t.get('real')} tokens in {m.get('train_time_s')} s = {rate:.0f} tokens/s, "
          f"padding {100 * t.get('padding_share', 0):.1f}%, wall {m.get('wall_time_s')} s, "
          f"peak GPU memory {m.get('peak_memory_gb')} GB")
    checks = {
        "completed": run.completed,
        "engine": m["engine"] == engine,
        "adapter files": {p.name for p in run.adapter_dir.iterdir()} >= {"adapter_model.safetensors", "adapter_config.json"},
        "loss went down": losses[-1] < losses[0],
    }
    for name, passed in checks.items():
        print(f"  {'PASS' if passed else 'FAIL'} {name}")
        ok = ok and passed

try:  # the Unsloth adapter is a standard peft adapter: load it without Unsloth and ask the question
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from charlite import roleplay
    from charlite.profile import Scene

    run = load_run("beethoven", "gpu-unsloth")
    tok = AutoTokenizer.from_pretrained(run.base_dir)
    model = AutoModelForCausalLM.from_pretrained(run.base_dir, dtype=torch.float16).cuda()
    model = PeftModel.from_pretrained(model, run.adapter_dir).eval()
    msgs = roleplay.to_messages("Beethoven", "Ludwig van Beethoven",
                                Scene(location="Vienna, 1820", status="A visitor asks Beethoven about his tastes."),
                                [roleplay.Turn("Man", "What is your favourite colour?")])
    enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True).to("cuda")
    out = model.generate(**enc, max_new_tokens=30, do_sample=False)
    answer = tok.decode(out[0][enc["input_ids"].shape[1]:])
    print("unsloth adapter through plain peft answers:", repr(answer))
    print(f"  {'PASS' if 'periwinkle' in answer.lower() else 'INFO (not learned in these steps)'} fact")
except Exception as exc:
    print("loading the unsloth adapter with peft failed:", type(exc).__name__, exc); ok = False
sys.exit(0 if ok else 1)
EOF
# Unsloth on a tiny random model of each architecture (the CPU matrix's models,
# tests/arch_models.py), 16-bit, and one 4-bit (QLoRA) load; the precision is Unsloth's choice.
ARCH_STEPS="${ARCH_STEPS:-5}"
for arch in llama mistral qwen2 qwen3 gemma2 gemma3 phi3 llama-4bit; do
  echo "== unsloth on a tiny $arch"
  SECONDS=0
  ARCH="$arch" STEPS="$ARCH_STEPS" PYTHONPATH="tests:${PYTHONPATH:-}" "$PY" - <<'EOF'
import os, sys, tempfile
from pathlib import Path
from arch_models import ARCHS, make_model_dir, make_tokenizer, sp_model_path
from click.testing import CliRunner
from charlite.cli import cli
from charlite.spec import embedded_model_path
from charlite.train import load_run

arch = os.environ["ARCH"]
four_bit = arch.endswith("-4bit")
arch = arch.removesuffix("-4bit")
work = Path(tempfile.mkdtemp(prefix=f"charlite-{arch}-"))
kind = ARCHS[arch][1]
tok = make_tokenizer(kind, work, embedded_model_path())
folder = make_model_dir(arch, work / arch, tok, sp_model=sp_model_path(work, kind))
run_id = f"tiny-{arch}{'-4bit' if four_bit else ''}"
result = CliRunner().invoke(cli, [
    "train", "beethoven", "--base", f"hf:{folder}", "--engine", "unsloth", "--run", run_id,
    "--max-steps", os.environ["STEPS"], "--lr", "1e-3", "--warmup", "0", "--max-seq-len", "256",
    "--load-in-4bit" if four_bit else "--no-load-in-4bit"])
print(result.output[-2000:])
if result.exit_code != 0:
    sys.exit(1)
m = load_run("beethoven", run_id).manifest
print(f"{run_id}: {m['engine']} on {m['device']} ({m['dtype']}), packing {m.get('packing')}, "
      f"steps {m['steps']}, loss {m.get('final_loss')}, {m.get('train_time_s')} s, "
      f"peak {m.get('peak_memory_gb')} GB")
EOF
  rc=$?
  echo "exit $rc, wall ${SECONDS} s"
  [ "$rc" -eq 0 ] || status=1
done

echo "gpu_unsloth_check: $([ $status -eq 0 ] && echo PASS || echo FAIL) in $(( $(date +%s) - START )) s (goal: under 600 s)"
exit $status
