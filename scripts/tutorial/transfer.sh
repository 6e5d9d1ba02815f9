#!/usr/bin/env bash
# The tutorial's transfer-learning chapter end to end (docs/tutorial.md):
# torchvision ResNet-18 weights -> safetensors -> a new 2-class head on a
# frozen backbone, trained with Adam on an image folder -> evaluate, predict
# and explain new images. `make tutorial-transfer` runs it.
#
# Knobs (environment):
#   PTH            a torchvision resnet18 state_dict (.pth), e.g. ImageNet's
#                  resnet18-f37072fd.pth; default: a randomly initialised
#                  torchvision ResNet-18 saved by python3-torch (this machine
#                  cannot download ImageNet weights), which exercises every step
#                  but learns much less
#   CIFAR_ARCHIVE  CIFAR-10 binary archive for the cat/dog folder (default
#                  ../shared/data/cifar-10-binary.tar.gz; without it: the
#                  synthetic shapes disc/square)
#   OUT            output directory (default runs/transfer)
#   EPOCHS SIZE    training epochs (default 3), image size (default 64)
#   PYTHON         a python3 with torch (default python3, else /usr/bin/python3)
# Last line: "transfer: ..." with the validation accuracy.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/transfer}
EPOCHS=${EPOCHS:-3}
SIZE=${SIZE:-64}
CIFAR_ARCHIVE=${CIFAR_ARCHIVE:-../shared/data/cifar-10-binary.tar.gz}
PY=${PYTHON:-python3}
"$PY" -c 'import torch' 2>/dev/null || PY=/usr/bin/python3
mkdir -p "$OUT"
make -s build

# 1. Weights: torchvision's ResNet-18 as safetensors.
PTH=${PTH:-}
if [ -z "$PTH" ]; then
  PTH=$OUT/resnet18-random.pth
  "$PY" -c 'import sys, torch, torchvision; torch.manual_seed(0); torch.save(torchvision.models.resnet18().state_dict(), sys.argv[1])' "$PTH"
  echo "transfer: no PTH given: using a randomly initialised torchvision ResNet-18 ($PTH)"
fi
"$PY" scripts/tutorial/pth2safetensors.py "$PTH" "$OUT/resnet18.safetensors"
bin/worker summary --model resnet18 --input 3,$SIZE,$SIZE --classes 2 --freeze-backbone | grep -i "params:"

# 2. Your own images: here cat and dog from CIFAR-10 (or two synthetic shapes).
if [ -f "$CIFAR_ARCHIVE" ]; then
  go run ./scripts/tutorial/mkfolder -cifar "$CIFAR_ARCHIVE" -classes cat,dog -train 500 -val 100 -out "$OUT/images"
  A=cat B=dog
else
  go run ./scripts/tutorial/mkfolder -classes disc,square -train 300 -val 60 -out "$OUT/images"
  A=disc B=square
fi

# 3. Freeze the backbone, new head (2 classes), Adam.
rm -rf "$OUT/run"
bin/coordinator --workers 1 --dataset folder --folder "$OUT/images" --image-size "$SIZE" \
  --weights "$OUT/resnet18.safetensors" --freeze-backbone \
  --optimizer adam --lr 0.001 --epochs "$EPOCHS" --batch 64 --output "$OUT/run" 2>&1 |
  grep -v '"level"' || true
test -f "$OUT/run/model.safetensors"

# 4. Evaluate, predict and explain new images.
FLAGS=(--dataset folder --folder "$OUT/images" --image-size "$SIZE" --device cpu)
bin/worker evaluate --weights "$OUT/run/model.safetensors" --model resnet18 "${FLAGS[@]}" 2>/dev/null | tee "$OUT/evaluate.txt"
bin/worker predict --weights "$OUT/run/model.safetensors" "${FLAGS[@]}" --top 2 \
  "$OUT/images/val/$A/0000.png" "$OUT/images/val/$B/0000.png" 2>/dev/null
bin/worker explain --weights "$OUT/run/model.safetensors" "${FLAGS[@]}" --method both --out "$OUT/explain" \
  "$OUT/images/val/$A/0000.png" "$OUT/images/val/$B/0000.png" 2>/dev/null
acc=$(sed -n 's/.*accuracy \([0-9.]*%\).*/\1/p' "$OUT/evaluate.txt")
echo "transfer: $A vs $B, frozen torchvision backbone ($(basename "$PTH")), $EPOCHS epochs: validation accuracy $acc; maps in $OUT/explain"
