"""Batch-1 decode speed of the chat app's engine (dynamic, static, compiled) against plain eager `generate`.

Same process, same prompt ids, interleaved rounds, medians. Every path makes exactly --new-tokens tokens
(min_new_tokens is set on the model's generation config, so an early end-of-turn cannot shorten a round):
  raw       model.generate(ids) eager with the dynamic cache: TTFT = generate(max_new_tokens=1)
  dynamic   ChatEngine(decode="dynamic").stream_ids: worker thread + streamer; TTFT = the first generated token
            reaching the engine's streamer (a random-weight model's tokens often decode to no text at all)
  static    ChatEngine(decode="static"): preallocated KV cache; on CUDA transformers compiles the decoding step
            (torch.compile, mode reduce-overhead = CUDA graphs). Warmed up (compiled) before timing.
  compiled  ChatEngine(decode="compiled"): the app's own loop (app/decoder.py): the same cache, the whole step with
            sampling compiled on CUDA, the host one token behind the GPU. Warmed up before timing.
decode tok/s = (N - 1) / (T(N) - TTFT); e2e tok/s = N / T(N).
--bandwidth-gib G first measures the device's copy bandwidth (a G GiB tensor copied 10 times, median; bytes read plus
bytes written per second) and reports each path's decode tok/s as a fraction of the bandwidth floor: bandwidth / the
bytes of weights one decoding step reads (every weight but the input embeddings, of which it reads one row; 4-bit
weights packed, with their quantisation constants; the KV cache not counted).

Usage: python bench/app_decode.py [--model M] [--bits 4] [--dtype bf16] [--prompt-tokens 512] [--new-tokens 256]
       [--repeats 5] [--modes raw,dynamic,static,compiled] [--bandwidth-gib 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _sync(model) -> None:
    import torch

    if next(model.parameters()).device.type == "cuda":
        torch.cuda.synchronize()


def raw_round(engine, ids, new_tokens):
    import torch

    from app.engine import pad_token_id

    model = engine.model
    tensor = torch.tensor([ids], device=next(model.parameters()).device)
    common = {"attention_mask": torch.ones_like(tensor), "do_sample": False, "eos_token_id": engine._stop_ids,
              "pad_token_id": pad_token_id(model, engine.tokenizer)}
    with torch.inference_mode():
        _sync(model)
        started = time.perf_counter()
        model.generate(tensor, max_new_tokens=1, min_new_tokens=1, **common)
        _sync(model)
        ttft = time.perf_counter() - started
        started = time.perf_counter()
        out = model.generate(tensor, max_new_tokens=new_tokens, **common)
        _sync(model)
        total = time.perf_counter() - started
    assert out.shape[1] - len(ids) == new_tokens, out.shape
    return ttft, total


FIRST_TOKEN: list[float] = []


def _record_first_token() -> None:
    """Time the first generated token as it reaches RowStreamer.put_tokens (every path hands tokens over there)."""
    from app.engine import RowStreamer

    original = RowStreamer.put_tokens

    def put_tokens(self, values):
        if not getattr(self, "_first_timed", False):
            self._first_timed = True
            FIRST_TOKEN.append(time.perf_counter())
        return original(self, values)

    RowStreamer.put_tokens = put_tokens


def engine_round(engine, ids, settings):
    FIRST_TOKEN.clear()
    started = time.perf_counter()
    for _ in engine.stream_ids(ids, settings):
        pass
    return FIRST_TOKEN[0] - started, time.perf_counter() - started


def copy_bandwidth(device: str, gib: float, copies: int = 10) -> dict:
    import torch

    size = int(gib * 2**30)
    source = torch.empty(size, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    times = []
    for _ in range(copies + 1):  # the first copy is a warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        target.copy_(source)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    del source, target
    if device == "cuda":
        torch.cuda.empty_cache()
    median = statistics.median(times[1:])
    return {"gib": gib, "copies": copies, "median_s": median, "bytes_per_s": 2 * size / median}


def weight_bytes_per_token(model) -> int:
    """Bytes of weights one batch-1 decoding step reads (see the module docstring)."""
    total = 0
    for param in model.parameters():
        total += param.numel() * param.element_size()
        state = getattr(param, "quant_state", None)  # bitsandbytes 4-bit: absmax, nested under double quantisation
        while state is not None:
            total += state.absmax.numel() * state.absmax.element_size()
            state = getattr(state, "state2", None)
    embeddings = model.get_input_embeddings().weight
    if embeddings is not model.get_output_embeddings().weight:
        total -= embeddings.numel() * embeddings.element_size()
    return total


def summarize(name, ttfts, totals, new_tokens):
    ttft, total = statistics.median(ttfts), statistics.median(totals)
    return {"path": name, "ttft_ms": ttft * 1e3, "decode_tok_s": (new_tokens - 1) / (total - ttft),
            "e2e_tok_s": new_tokens / total, "rounds": len(totals)}


def main(argv=None) -> int:
    import torch

    from app.engine import ChatEngine, GenerationSettings
    from app.models import ModelRequest, load

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    parser.add_argument("--bits", type=int, default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--modes", default="raw,dynamic,static,compiled")
    parser.add_argument("--bandwidth-gib", dest="bandwidth_gib", type=float, default=0,
                        help="measure the copy bandwidth with a tensor this large first (0: do not)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    _record_first_token()
    bandwidth = None
    if args.bandwidth_gib:  # before the model loads, on the device it will load on (the app's default)
        bandwidth = copy_bandwidth("cuda" if torch.cuda.is_available() else "cpu", args.bandwidth_gib)
    loaded = load(ModelRequest(model=args.model, bits=args.bits, dtype=args.dtype, compare=False), notice=print)
    model = loaded.model
    model.generation_config.min_new_tokens = args.new_tokens  # every path makes exactly N tokens
    torch.manual_seed(0)
    vocab = min(len(loaded.tokenizer), model.config.vocab_size)
    ids = torch.randint(100, vocab - 100, (args.prompt_tokens,)).tolist()
    settings = GenerationSettings(temperature=0, max_new_tokens=args.new_tokens, repetition_penalty=1.0)
    modes = args.modes.split(",")
    engines = {mode: ChatEngine(model, loaded.tokenizer, decode=mode) for mode in modes if mode != "raw"}
    for engine in engines.values():  # warm-up: compiles the static path on CUDA for these shapes
        for _ in range(2):
            engine_round(engine, ids, settings)
    raw_engine = ChatEngine(model, loaded.tokenizer)  # only for its stop ids
    if "raw" in modes:
        raw_round(raw_engine, ids, args.new_tokens)
    timings = {mode: ([], []) for mode in modes}
    for _ in range(args.repeats):
        for mode in modes:
            ttft, total = raw_round(raw_engine, ids, args.new_tokens) if mode == "raw" else \
                engine_round(engines[mode], ids, settings)
            timings[mode][0].append(ttft)
            timings[mode][1].append(total)
    rows = [summarize(mode, *timings[mode], args.new_tokens) for mode in modes]
    weight_bytes = weight_bytes_per_token(model)
    floor = bandwidth["bytes_per_s"] / weight_bytes if bandwidth else None
    for row in rows:
        row["floor_fraction"] = row["decode_tok_s"] / floor if floor else None
    device = next(model.parameters()).device
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.processor() or
        platform.machine(), "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "transformers": __import__("transformers").__version__,
        "model": loaded.info.get("Model", args.model), "dtype": str(model.dtype), "bits": args.bits,
        "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens, "rows": rows,
        "peak_gpu_GiB": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
        "weight_bytes_per_token": weight_bytes, "bandwidth": bandwidth, "floor_tok_s": floor,
        "inductor_env": {k: v for k, v in os.environ.items() if k.startswith("TORCHINDUCTOR_")},
    }
    base = next((r for r in rows if r["path"] == "raw"), rows[0])
    print(f"{result['device']}, {result['model']}, {result['dtype']}, bits={args.bits}, prompt {args.prompt_tokens}, "
          f"{args.new_tokens} new tokens, medians of {args.repeats}"
          + "".join(f", {k}={v}" for k, v in result["inductor_env"].items()))
    if floor:
        print(f"copy bandwidth {bandwidth['bytes_per_s'] / 1e9:.0f} GB/s, {weight_bytes / 1e9:.2f} GB of weights read "
              f"per token: floor {floor:.1f} tok/s")
    print("| path | TTFT ms | decode tok/s | e2e tok/s | vs raw | of floor |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        share = f"{row['floor_fraction']:.1%}" if floor else "–"
        print(f"| {row['path']} | {row['ttft_ms']:.1f} | {row['decode_tok_s']:.1f} | {row['e2e_tok_s']:.1f} | "
              f"{row['decode_tok_s'] / base['decode_tok_s']:.2f}x | {share} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
