/* hf_gpt2.c — Hugging Face GPT-2 model directories (config.json + model.safetensors) to and from a
 * qkv_gpt. The rules (accepted names, ignored buffers, the tied head) are stated in qkv/hf.h.
 *
 * Not here: the safetensors format itself (safetensors.c), the tokenizer files (src/text/), sharded
 * checkpoints (model.safetensors.index.json) and pytorch_model.bin pickles.
 *
 * The one convention a reader needs: the model's parameter block is the list of expected tensors.
 * qkv_gpt declares its parameters under HF's GPT2Model names, in state-dict order, with exactly the
 * shapes config.json implies, so loading is "for every parameter, find its tensor (with or without
 * the 'transformer.' prefix), check the shape, convert", then "every tensor in the file was used or
 * is an ignored buffer", and saving is a walk of the block with the prefix added.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core_int.h"
#include "core/json.h"
#include "models/gpt_int.h"
#include "qkv/hf.h"
#include "qkv/io.h"

#define PREFIX "transformer."
#define CONFIG_MAX_BYTES (4u << 20) /* a GPT-2 config.json is under 1 KiB */
#define NAME_LEN 256

/* ---- config.json ---- */

/* The whole file in a malloc'd buffer. NULL + *st + qkv_last_error on failure. */
static char *read_file(const char *path, size_t *len, qkv_status *st) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        *st = qkv__set_error(QKV_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(CONFIG_MAX_BYTES + 1);
    size_t n = buf ? fread(buf, 1, CONFIG_MAX_BYTES + 1, f) : 0;
    int err = ferror(f);
    fclose(f);
    if (!buf) {
        *st = qkv__set_error(QKV_ERR_NOMEM, "%s: out of memory", path);
        return NULL;
    }
    if (err || n > CONFIG_MAX_BYTES) {
        free(buf);
        if (err) *st = qkv__set_error(QKV_ERR_IO, "%s: read error", path);
        else *st = qkv__set_error(QKV_ERR_FORMAT, "%s: larger than %u bytes: not a config.json", path, CONFIG_MAX_BYTES);
        return NULL;
    }
    *len = n;
    return buf;
}

/* Reads an optional integer key into *out (kept when the key is absent). null_ok: JSON null gives
 * null_value. 0 + qkv_last_error when the value has the wrong type or lies outside [lo, hi]. */
static int cfg_int(const char *path, const qkv__json *root, const char *key, int64_t lo, int64_t hi, int null_ok,
                   int64_t null_value, int64_t *out) {
    const qkv__json *v = qkv__json_get(root, key);
    if (!v) return 1;
    if (v->type == QKV_JSON_NULL && null_ok) {
        *out = null_value;
        return 1;
    }
    if (v->type != QKV_JSON_NUMBER || !v->is_int) {
        qkv__set_error(QKV_ERR_FORMAT, "%s: \"%s\" must be an integer%s, got %s", path, key, null_ok ? " or null" : "",
                       v->type == QKV_JSON_NUMBER ? "a fraction" : qkv__json_type_name(v->type));
        return 0;
    }
    if (v->integer < lo || v->integer > hi) {
        qkv__set_error(QKV_ERR_FORMAT, "%s: \"%s\" is %lld, outside [%lld, %lld]", path, key, (long long)v->integer,
                       (long long)lo, (long long)hi);
        return 0;
    }
    *out = v->integer;
    return 1;
}

/* Reads an optional number key into *out (kept when absent). */
static int cfg_float(const char *path, const qkv__json *root, const char *key, float *out) {
    const qkv__json *v = qkv__json_get(root, key);
    if (!v) return 1;
    if (v->type != QKV_JSON_NUMBER) {
        qkv__set_error(QKV_ERR_FORMAT, "%s: \"%s\" must be a number, got %s", path, key, qkv__json_type_name(v->type));
        return 0;
    }
    *out = (float)v->number;
    return 1;
}

/* An optional key that must be a string equal to one of want[] (or null / absent when null_ok). */
static int cfg_string_is(const char *path, const qkv__json *root, const char *key, const char *const *want, int n,
                         int null_ok) {
    const qkv__json *v = qkv__json_get(root, key);
    if (!v || (v->type == QKV_JSON_NULL && null_ok)) return 1;
    if (v->type == QKV_JSON_STRING)
        for (int i = 0; i < n; i++)
            if (strlen(want[i]) == v->len && memcmp(v->str, want[i], v->len) == 0) return 1;
    if (v->type == QKV_JSON_STRING)
        qkv__set_error(QKV_ERR_FORMAT, "%s: \"%s\" is \"%.64s\"; qkv's GPT-2 supports only \"%s\"", path, key, v->str,
                       want[0]);
    else
        qkv__set_error(QKV_ERR_FORMAT, "%s: \"%s\" must be the string \"%s\", got %s", path, key, want[0],
                       qkv__json_type_name(v->type));
    return 0;
}

/* An optional boolean key that, when present, must equal want (an architecture variant qkv lacks). */
static int cfg_bool_is(const char *path, const qkv__json *root, const char *key, int want) {
    const qkv__json *v = qkv__json_get(root, key);
    if (!v) return 1;
    if (v->type != QKV_JSON_BOOL) {
        qkv__set_error(QKV_ERR_FORMAT, "%s: \"%s\" must be true or false, got %s", path, key,
                       qkv__json_type_name(v->type));
        return 0;
    }
    if (v->boolean != want) {
        qkv__set_error(QKV_ERR_FORMAT, "%s: \"%s\": %s is not supported (qkv's GPT-2 implements %s)", path, key,
                       v->boolean ? "true" : "false", want ? "true" : "false");
        return 0;
    }
    return 1;
}

static qkv_status config_from_json(const char *path, const qkv__json *root, qkv_gpt_config *out) {
    if (root->type != QKV_JSON_OBJECT)
        return qkv__set_error(QKV_ERR_FORMAT, "%s: must hold a JSON object, got %s", path,
                              qkv__json_type_name(root->type));
    static const char *const gpt2[] = {"gpt2"};
    /* gelu_pytorch_tanh is the same tanh approximation as gelu_new, computed by a fused PyTorch op. */
    static const char *const gelu[] = {"gelu_new", "gelu_pytorch_tanh"};
    if (!cfg_string_is(path, root, "model_type", gpt2, 1, 0) ||
        !cfg_string_is(path, root, "activation_function", gelu, 2, 1) ||
        !cfg_bool_is(path, root, "scale_attn_weights", 1) ||
        !cfg_bool_is(path, root, "scale_attn_by_inverse_layer_idx", 0) || !cfg_bool_is(path, root, "add_cross_attention", 0))
        return QKV_ERR_FORMAT;

    qkv_gpt_config c = qkv_gpt_config_gpt2(); /* GPT2Config's defaults for absent keys */
    int64_t V = c.vocab_size, P = c.n_positions, C = c.n_embd, L = c.n_layer, H = c.n_head;
    int64_t bos = c.bos_token_id, eos = c.eos_token_id, inner = -1;
    const int64_t big = INT32_MAX;
    if (!qkv__json_get(root, "n_positions") && !cfg_int(path, root, "n_ctx", 1, big, 0, 0, &P)) return QKV_ERR_FORMAT;
    if (!cfg_int(path, root, "vocab_size", 1, big, 0, 0, &V) || !cfg_int(path, root, "n_positions", 1, big, 0, 0, &P) ||
        !cfg_int(path, root, "n_embd", 1, big, 0, 0, &C) ||
        !cfg_int(path, root, "n_layer", 1, QKV_GPT_MAX_LAYERS, 0, 0, &L) ||
        !cfg_int(path, root, "n_head", 1, big, 0, 0, &H) || !cfg_int(path, root, "n_inner", 1, big, 1, -1, &inner) ||
        !cfg_int(path, root, "bos_token_id", 0, big, 1, -1, &bos) ||
        !cfg_int(path, root, "eos_token_id", 0, big, 1, -1, &eos) ||
        !cfg_float(path, root, "layer_norm_epsilon", &c.layer_norm_epsilon) ||
        !cfg_float(path, root, "embd_pdrop", &c.embd_pdrop) || !cfg_float(path, root, "attn_pdrop", &c.attn_pdrop) ||
        !cfg_float(path, root, "resid_pdrop", &c.resid_pdrop) ||
        !cfg_float(path, root, "initializer_range", &c.initializer_range))
        return QKV_ERR_FORMAT;
    if (inner != -1 && inner != 4 * C)
        return qkv__set_error(QKV_ERR_FORMAT, "%s: \"n_inner\" is %lld; qkv's GPT-2 MLP is 4 * n_embd = %lld (or null)",
                              path, (long long)inner, (long long)(4 * C));
    c.vocab_size = V;
    c.n_positions = P;
    c.n_embd = C;
    c.n_layer = (int)L;
    c.n_head = (int)H;
    c.bos_token_id = (int32_t)bos;
    c.eos_token_id = (int32_t)eos;
    if (qkv_gpt_config_check(&c) != QKV_OK) {
        char why[400];
        snprintf(why, sizeof why, "%s", qkv_last_error());
        return qkv__set_error(QKV_ERR_FORMAT, "%s: %s", path, why);
    }
    *out = c;
    return QKV_OK;
}

qkv_status qkv_hf_gpt2_config_read(const char *path, qkv_gpt_config *cfg) {
    if (!path || !cfg) return qkv__set_error(QKV_ERR_ARG, "qkv_hf_gpt2_config_read: NULL argument");
    size_t len = 0;
    qkv_status rs = QKV_OK;
    char *text = read_file(path, &len, &rs);
    if (!text) return rs;
    qkv__json *root = qkv__json_parse(text, len, path);
    free(text);
    if (!root) return QKV_ERR_FORMAT; /* the parser's message names the file, byte, line and column */
    qkv_status s = config_from_json(path, root, cfg);
    qkv__json_free(root);
    return s;
}

/* ---- model.safetensors ---- */

/* "h.N.attn.bias" / "h.N.attn.masked_bias" with N < n_layer: the causal-mask buffers that
 * transformers before 4.x saved beside the weights. */
static int ignored_buffer(const char *name, int n_layer) {
    if (strncmp(name, "h.", 2) != 0) return 0;
    char *end;
    errno = 0;
    long l = strtol(name + 2, &end, 10);
    if (end == name + 2 || errno || l < 0 || l >= n_layer || name[2] == '+' || name[2] == '-' || name[2] == ' ')
        return 0;
    return strcmp(end, ".attn.bias") == 0 || strcmp(end, ".attn.masked_bias") == 0;
}

static const char *shape_str(int ndim, const int64_t *shape, char *buf, size_t size) {
    size_t k = (size_t)snprintf(buf, size, "(");
    for (int i = 0; i < ndim && k < size; i++)
        k += (size_t)snprintf(buf + k, size - k, i ? ",%lld" : "%lld", (long long)shape[i]);
    if (k < size) snprintf(buf + k, size - k, ")");
    return buf;
}

/* Fills every parameter of m from st; checks that nothing unexpected is left. */
static qkv_status load_tensors(qkv_gpt *m, qkv_safetensors *st, const char *file, const char *cfg_path) {
    qkv_params *p = qkv_gpt_params(m);
    const qkv_gpt_config *cfg = qkv_gpt_get_config(m);
    const int n_st = qkv_safetensors_count(st);
    uint8_t *used = calloc((size_t)(n_st > 0 ? n_st : 1), 1);
    if (!used) return qkv__set_error(QKV_ERR_NOMEM, "%s: out of memory", file);
    qkv_status s = QKV_OK;
    char name[NAME_LEN], a[96], b[96];
    for (int i = 0; i < qkv_params_count(p) && s == QKV_OK; i++) {
        qkv_tensor *t = qkv_params_get(p, i);
        snprintf(name, sizeof name, PREFIX "%s", t->name);
        const qkv_st_tensor *bare = qkv_safetensors_find(st, t->name), *pre = qkv_safetensors_find(st, name);
        if (bare && pre) {
            s = qkv__set_error(QKV_ERR_FORMAT, "%s: tensor '%s' appears twice, with and without the '" PREFIX "' prefix",
                               file, t->name);
            break;
        }
        const qkv_st_tensor *x = bare ? bare : pre;
        if (!x) {
            s = qkv__set_error(QKV_ERR_FORMAT, "%s: tensor '%s' %s is missing (expected from %s: n_layer %d)", file,
                               t->name, qkv_tensor_shape_str(t, a, sizeof a), cfg_path, cfg->n_layer);
            break;
        }
        int same = x->ndim == t->ndim;
        for (int d = 0; same && d < t->ndim; d++) same = x->shape[d] == t->shape[d];
        if (!same) {
            s = qkv__set_error(QKV_ERR_FORMAT, "%s: tensor '%s' has shape %s but %s implies %s", file, x->name,
                               shape_str(x->ndim, x->shape, b, sizeof b), cfg_path,
                               qkv_tensor_shape_str(t, a, sizeof a));
            break;
        }
        if (qkv_safetensors_read_f32(x, t->data, qkv_tensor_numel(t)) != QKV_OK) {
            s = qkv__set_error(QKV_ERR_FORMAT, "%s: tensor '%s' has dtype %s (F32, F16, BF16 or F64 wanted)", file,
                               x->name, qkv_dtype_name(x->dtype));
            break;
        }
        for (int j = 0; j < n_st; j++)
            if (qkv_safetensors_get(st, j) == x) used[j] = 1;
    }
    for (int j = 0; j < n_st && s == QKV_OK; j++) {
        if (used[j]) continue;
        const qkv_st_tensor *x = qkv_safetensors_get(st, j);
        const char *nm = strncmp(x->name, PREFIX, strlen(PREFIX)) == 0 ? x->name + strlen(PREFIX) : x->name;
        if (ignored_buffer(nm, cfg->n_layer)) continue;
        if (strcmp(x->name, "lm_head.weight") == 0) {
            /* The head is tied to wte: a file with a different head is a different model. */
            const qkv_tensor *wte = qkv_params_find(p, "wte.weight");
            const int64_t n = qkv_tensor_numel(wte);
            int same = x->ndim == 2 && x->shape[0] == wte->shape[0] && x->shape[1] == wte->shape[1];
            float *tmp = same ? malloc((size_t)n * sizeof(float)) : NULL;
            if (same && !tmp) {
                s = qkv__set_error(QKV_ERR_NOMEM, "%s: out of memory comparing lm_head.weight", file);
                break;
            }
            if (same && qkv_safetensors_read_f32(x, tmp, n) != QKV_OK) {
                free(tmp);
                s = qkv__set_error(QKV_ERR_FORMAT, "%s: tensor 'lm_head.weight' has dtype %s (a float type wanted)",
                                   file, qkv_dtype_name(x->dtype));
                break;
            }
            same = same && memcmp(tmp, wte->data, (size_t)n * sizeof(float)) == 0;
            free(tmp);
            if (!same) {
                s = qkv__set_error(QKV_ERR_FORMAT, "%s: 'lm_head.weight' %s differs from wte.weight: GPT-2's head is "
                                   "tied to the token embedding (untied heads are not supported)", file,
                                   shape_str(x->ndim, x->shape, b, sizeof b));
                break;
            }
            continue;
        }
        int extra = 0;
        for (int k = j + 1; k < n_st; k++) extra += !used[k];
        s = qkv__set_error(QKV_ERR_FORMAT, "%s: unexpected tensor '%s' %s (not a GPT-2 parameter for %s)%s", file,
                           x->name, shape_str(x->ndim, x->shape, b, sizeof b), cfg_path,
                           extra ? " (and others after it)" : "");
    }
    free(used);
    return s;
}

/* dir + "/" + file into buf; 0 + qkv_last_error when it does not fit. */
static int join_path(char *buf, size_t size, const char *dir, const char *file) {
    int n = snprintf(buf, size, "%s/%s", dir, file);
    if (n < 0 || (size_t)n >= size) {
        qkv__set_error(QKV_ERR_ARG, "%s: path too long", dir);
        return 0;
    }
    return 1;
}

qkv_gpt *qkv_hf_gpt2_load(const char *dir) {
    if (!dir || !*dir) {
        qkv__set_error(QKV_ERR_ARG, "qkv_hf_gpt2_load: no directory given");
        return NULL;
    }
    struct stat sb;
    if (stat(dir, &sb) != 0) {
        qkv__set_error(QKV_ERR_IO, "%s: cannot open model directory: %s", dir, strerror(errno));
        return NULL;
    }
    if (!S_ISDIR(sb.st_mode)) {
        qkv__set_error(QKV_ERR_IO, "%s: not a directory (a model is a directory with config.json and "
                       "model.safetensors)", dir);
        return NULL;
    }
    char cfg_path[4096], st_path[4096];
    if (!join_path(cfg_path, sizeof cfg_path, dir, "config.json") ||
        !join_path(st_path, sizeof st_path, dir, "model.safetensors"))
        return NULL;
    qkv_gpt_config cfg;
    if (qkv_hf_gpt2_config_read(cfg_path, &cfg) != QKV_OK) return NULL;
    qkv_safetensors *st = qkv_safetensors_open(st_path);
    if (!st) return NULL; /* its message names the file and the problem */
    qkv_gpt *m = qkv__gpt_new_zeroed(&cfg);
    if (!m || load_tensors(m, st, st_path, cfg_path) != QKV_OK) {
        qkv_gpt_free(m);
        m = NULL;
    }
    qkv_safetensors_close(st);
    return m;
}

/* ---- saving ---- */

/* The shortest decimal that reads back as the same float (what Python's repr prints for it). */
static void write_float(FILE *f, float x) {
    char buf[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)x);
        if (strtof(buf, NULL) == x) break;
    }
    /* JSON needs a fraction or exponent to keep it a float for Python: 0 -> 0.0. */
    if (!strpbrk(buf, ".e")) strcat(buf, ".0");
    fputs(buf, f);
}

static void write_id(FILE *f, int32_t id) {
    if (id < 0) fputs("null", f);
    else fprintf(f, "%d", (int)id);
}

/* config.json as save_pretrained writes it for GPT2LMHeadModel (sorted keys, indent 2). */
static int write_config(FILE *f, const qkv_gpt_config *c) {
    fputs("{\n  \"activation_function\": \"gelu_new\",\n  \"architectures\": [\n    \"GPT2LMHeadModel\"\n  ],\n", f);
    fputs("  \"attn_pdrop\": ", f);
    write_float(f, c->attn_pdrop);
    fputs(",\n  \"bos_token_id\": ", f);
    write_id(f, c->bos_token_id);
    fputs(",\n  \"embd_pdrop\": ", f);
    write_float(f, c->embd_pdrop);
    fputs(",\n  \"eos_token_id\": ", f);
    write_id(f, c->eos_token_id);
    fputs(",\n  \"initializer_range\": ", f);
    write_float(f, c->initializer_range);
    fputs(",\n  \"layer_norm_epsilon\": ", f);
    write_float(f, c->layer_norm_epsilon);
    fprintf(f, ",\n  \"model_type\": \"gpt2\",\n  \"n_embd\": %lld,\n  \"n_head\": %d,\n  \"n_inner\": null,\n"
               "  \"n_layer\": %d,\n  \"n_positions\": %lld,\n  \"reorder_and_upcast_attn\": false,\n"
               "  \"resid_pdrop\": ",
            (long long)c->n_embd, c->n_head, c->n_layer, (long long)c->n_positions);
    write_float(f, c->resid_pdrop);
    fputs(",\n  \"scale_attn_by_inverse_layer_idx\": false,\n  \"scale_attn_weights\": true,\n"
          "  \"summary_activation\": null,\n  \"summary_first_dropout\": 0.1,\n  \"summary_proj_to_labels\": true,\n"
          "  \"summary_type\": \"cls_index\",\n  \"summary_use_proj\": true,\n  \"torch_dtype\": \"float32\",\n"
          "  \"use_cache\": true,\n",
          f);
    fprintf(f, "  \"vocab_size\": %lld\n}\n", (long long)c->vocab_size);
    return ferror(f) ? -1 : 0;
}

static int write_config_cb(FILE *f, const void *c) { return write_config(f, c); }

qkv_status qkv_hf_gpt2_save(const qkv_gpt *m, const char *dir) {
    if (!m || !dir || !*dir) return qkv__set_error(QKV_ERR_ARG, "qkv_hf_gpt2_save: %s", m ? "no directory given" : "model is NULL");
    if (qkv_gpt_inference_layout(m))
        return qkv__set_error(QKV_ERR_STATE, "qkv_hf_gpt2_save: %s: the model holds its projections in the inference "
                              "layout; qkv_gpt_set_inference_layout(m, 0) first", dir);
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return qkv__set_error(QKV_ERR_IO, "%s: cannot create directory: %s", dir, strerror(errno));
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return qkv__set_error(QKV_ERR_IO, "%s: exists and is not a directory", dir);
    char cfg_path[4096], st_path[4096];
    if (!join_path(cfg_path, sizeof cfg_path, dir, "config.json") ||
        !join_path(st_path, sizeof st_path, dir, "model.safetensors"))
        return QKV_ERR_ARG;

    qkv_params *p = qkv_gpt_params((qkv_gpt *)m);
    const int n = qkv_params_count(p);
    qkv_st_entry *e = calloc((size_t)n, sizeof *e);
    char *names = calloc((size_t)n, NAME_LEN);
    if (!e || !names) {
        free(e);
        free(names);
        return qkv__set_error(QKV_ERR_NOMEM, "%s: out of memory", st_path);
    }
    for (int i = 0; i < n; i++) {
        const qkv_tensor *t = qkv_params_get(p, i);
        snprintf(names + (size_t)i * NAME_LEN, NAME_LEN, PREFIX "%s", t->name);
        e[i] = (qkv_st_entry){names + (size_t)i * NAME_LEN, t->ndim, t->shape, t->data};
    }
    static const char *const meta[2] = {"format", "pt"};
    qkv_status s = qkv_safetensors_write(st_path, e, n, meta, 1);
    free(e);
    free(names);
    if (s != QKV_OK) return s; /* message names the file */
    return qkv__write_file_atomic(cfg_path, write_config_cb, qkv_gpt_get_config(m));
}

qkv_status qkv_hf_check_vocab(const qkv_gpt *m, const qkv_tokenizer *tok) {
    if (!m || !tok) return qkv__set_error(QKV_ERR_ARG, "qkv_hf_check_vocab: %s is NULL", m ? "tokenizer" : "model");
    const int64_t tv = qkv_tokenizer_vocab_size(tok), mv = qkv_gpt_get_config(m)->vocab_size;
    if (tv > mv)
        return qkv__set_error(QKV_ERR_RANGE, "tokenizer has %lld tokens but the model's vocab_size is %lld: ids "
                              ">= %lld have no embedding (use a matching tokenizer or a model with a larger vocab_size)",
                              (long long)tv, (long long)mv, (long long)mv);
    return QKV_OK;
}
