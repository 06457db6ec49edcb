#!/bin/bash
# usage: table.sh CODE_TREE RUN OUTDIR  -> one line per subnet x flavour
CODE=$1; RUN=$2; OUT=$3; PY=/work/main/.venv/bin/python; mkdir -p $OUT; cd $CODE
for s in smallest largest; do for t in "cpu int8 ort" "jetson-orin int8 trt"; do set -- $t
  rm -rf $OUT/$s-$3; $PY -m ofa_deploy export $RUN --$s --target $1 --precision $2 --out $OUT/$s-$3 > /dev/null 2>$OUT/$s-$3.err
  $PY -c "
import json;d=json.load(open('$OUT/$s-$3/model.json'));a=d['accuracy'];print('$RUN', '$s', '$3', 'int8 %.2f fp32 %.2f' % (100*a['top1'], 100*a['fp32_top1']), 'agree %.4f' % d['precision_parity']['top1_agreement'], 'mad %.4f' % d['precision_parity']['mean_abs_diff'], 'Q/DQ', d['conversion']['quantize_nodes'], d['conversion']['dequantize_nodes'])"
done; done
