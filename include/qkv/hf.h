/* qkv/hf.h — Hugging Face GPT-2 model directories: config.json + model.safetensors, as written by
 * transformers' GPT2LMHeadModel.save_pretrained (and read by from_pretrained).
 *
 * Reading accepts the names of both GPT2LMHeadModel ("transformer.wte.weight", ...) and GPT2Model
 * ("wte.weight", ...), tensors in F32, F16 or BF16 (converted to float32), and ignores the
 * non-parameter buffers older transformers versions saved (h.N.attn.bias, h.N.attn.masked_bias: the
 * causal mask, which qkv builds itself). A "lm_head.weight" tensor, when present, must equal
 * wte.weight (GPT-2's head is tied to it; a file whose head differs describes a model qkv does not
 * implement, so it is refused rather than silently dropped). Every other name is an error, and so is
 * any parameter missing or with a shape other than the one config.json implies.
 *
 * Writing produces what save_pretrained writes for GPT2LMHeadModel: config.json with model_type
 * "gpt2" and architectures ["GPT2LMHeadModel"], and an F32 model.safetensors with metadata
 * {"format": "pt"}, names "transformer.*" and no lm_head.weight (tied weights are saved once).
 * A tokenizer in the same directory is read and written by text.h (qkv_tokenizer_load_dir /
 * qkv_tokenizer_save_dir).
 *
 * Errors: NULL / a status, with a one-line message naming the file, the tensor or the config key in
 * qkv_last_error(). Nothing here prints or exits.
 */
#ifndef QKV_HF_H
#define QKV_HF_H

#include "core.h"
#include "gpt.h"
#include "text.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Reads dir/config.json (qkv_hf_gpt2_config_read) and dir/model.safetensors into a new model that
 * the caller frees with qkv_gpt_free. NULL on error (qkv_last_error): QKV_ERR_IO for a missing or
 * unreadable file, QKV_ERR_FORMAT for a malformed file, a missing/unexpected tensor or a shape
 * that does not match config.json, QKV_ERR_NOMEM. */
qkv_gpt *qkv_hf_gpt2_load(const char *dir);

/* Writes m into dir (created when missing, one level, mode 0777 & ~umask): dir/config.json and
 * dir/model.safetensors, each to a temporary name in dir and renamed into place, so each file is
 * either its old complete version or the new one. Other files in dir are left alone. A model in the
 * inference layout (qkv_gpt_set_inference_layout) is refused with QKV_ERR_STATE. */
qkv_status qkv_hf_gpt2_save(const qkv_gpt *m, const char *dir);

/* Reads a GPT-2 config.json into *cfg (untouched on error). Keys: vocab_size, n_positions (or the
 * older n_ctx), n_embd, n_layer, n_head, layer_norm_epsilon, embd_pdrop, attn_pdrop, resid_pdrop,
 * initializer_range, bos_token_id, eos_token_id; a missing key takes GPT2Config's default
 * (qkv_gpt_config_gpt2), as transformers does. Refused: model_type other than "gpt2",
 * activation_function other than "gelu_new" (absent or null reads as gelu_new), n_inner other than
 * null or 4 * n_embd, a key of the wrong JSON type, and any configuration qkv_gpt_config_check
 * rejects. */
qkv_status qkv_hf_gpt2_config_read(const char *config_json_path, qkv_gpt_config *cfg);

/* QKV_OK when every id of tok is a valid input of m (tokenizer vocab_size <= model vocab_size; the
 * model may have more, as GPT-2's padded vocabularies do); QKV_ERR_RANGE with a message giving both
 * sizes otherwise. */
qkv_status qkv_hf_check_vocab(const qkv_gpt *m, const qkv_tokenizer *tok);

#ifdef __cplusplus
}
#endif
#endif
