#!/usr/bin/env bash
# The GPU session behind README's MPNet figures: ms/step alone on the GPU (MiniLM and MPNet, fp32 and
# bf16), then 2-epoch quality runs sharing the GPU. Run from the repository root on the lent machine,
# after stage.py's shards arrived:  bash benchmarks/gpu_session/run.sh
set -u
ROOT=$PWD
export PYTHONPATH=$ROOT PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
[ -f .gpu/mpnet/model.safetensors ] || python3 benchmarks/gpu_session/assemble.py || exit 1
D=$ROOT/.gpu/data; R=/tmp/runs; MP=$ROOT/.gpu/mpnet; ML=$ROOT/.gpu/minilm; mkdir -p $R
# 1) alone on the GPU: 60 steps of the default batch (64 per task), ms/step from metrics.jsonl.
for enc in minilm mpnet; do for prec in fp32 bf16; do
  dir=$ML; [ $enc = mpnet ] && dir=$MP
  timeout 120 python3 -m bertmtl train --data-dir $D --encoder $dir --device cuda --precision $prec \
     --max-steps 60 --eval-every 100000 --out $R/time-$enc-$prec > $R/time-$enc-$prec.log 2>&1 \
     || { echo "FAILED time-$enc-$prec"; tail -20 $R/time-$enc-$prec.log; }
done; done
# 2) quality: the default schedule (2 epochs), all runs at once on the one GPU.
q() { name=$1; shift; timeout 330 python3 -m bertmtl train --data-dir $D --device cuda --out $R/q-$name "$@" \
      > $R/q-$name.log 2>&1 || echo "FAILED q-$name (rc $?)"; }
q mpnet-bf16-lr2e-5 --encoder $MP --precision bf16 --lr 2e-5 &
q mpnet-bf16-lr5e-5 --encoder $MP --precision bf16 --lr 5e-5 &
q mpnet-bf16-lr1e-4 --encoder $MP --precision bf16 --lr 1e-4 &
q mpnet-bf16-lr5e-5-s43 --encoder $MP --precision bf16 --lr 5e-5 --seed 43 &
q mpnet-fp32-lr5e-5 --encoder $MP --precision fp32 --lr 5e-5 &
q minilm-bf16 --encoder $ML --precision bf16 &
wait
python3 benchmarks/gpu_session/report.py $R | tee ${OUT:-.}/report.txt
