/* qkv.h — the whole public API of libqkv. Include this one header.
 *
 *   core.h   status codes, context (arena + autograd tape), tensors, parameter blocks, RNG
 *   ops.h    differentiable operations (matmul, activations, softmax, LayerNorm, attention, losses)
 *   nn.h     modules with parameters: linear, embedding, positions, multi-head attention, FFN,
 *            encoder / decoder layers and stacks, Bahdanau and Luong attention
 *   optim.h  SGD, AdamW, gradient clipping, learning-rate schedules
 *   text.h   tokenizers: GPT-2 byte-level BPE, byte- and character-level
 *   infer.h  sampling (greedy, temperature, top-k, top-p) and KV-cache generation
 *   train.h  training loop: token data, batches, checkpoints with exact resume, loss plot
 */
#ifndef QKV_H
#define QKV_H

#include "qkv/core.h"
#include "qkv/ops.h"
#include "qkv/nn.h"
#include "qkv/optim.h"
#include "qkv/io.h"
#include "qkv/text.h"
#include "qkv/gpt.h"
#include "qkv/hf.h"
#include "qkv/infer.h"
#include "qkv/train.h"

#endif
