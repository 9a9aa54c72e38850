/* test_hf_gpt2.c — Hugging Face GPT-2 directories: the bytes qkv_hf_gpt2_save writes (checked against
 * the safetensors spec and HF's GPT2LMHeadModel naming by a parser written here, not by qkv's
 * safetensors reader), a checkpoint written by transformers itself (../shared/data), bad input of
 * every kind, and atomic saving (a save killed at any moment leaves the old or the new model).
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/json.h"
#include "testutil.h"

static char g_tmp[256]; /* this run's scratch directory */

/* ---- small file helpers ---- */

static unsigned char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

static void spit(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len) {
        printf("FAIL: cannot write %s\n", path);
        exit(1);
    }
    fclose(f);
}

static void path2(char *buf, size_t size, const char *dir, const char *file) {
    if (snprintf(buf, size, "%s/%s", dir, file) >= (int)size) {
        printf("FAIL: path %s/%s too long\n", dir, file);
        exit(1);
    }
}

/* Removes every plain file in dir, then dir (one level: what these tests create). */
static void rm_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[1024];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        path2(p, sizeof p, dir, e->d_name);
        if (unlink(p) != 0) rm_dir(p);
    }
    closedir(d);
    rmdir(dir);
}

/* Copies src/config.json and src/model.safetensors into a fresh dir. */
static void copy_model(const char *src, const char *dst) {
    char a[1024], b[1024];
    mkdir(dst, 0777);
    static const char *const files[] = {"config.json", "model.safetensors"};
    for (int i = 0; i < 2; i++) {
        size_t n;
        path2(a, sizeof a, src, files[i]);
        path2(b, sizeof b, dst, files[i]);
        unsigned char *d = slurp(a, &n);
        if (!d) {
            printf("FAIL: cannot read %s\n", a);
            exit(1);
        }
        spit(b, d, n);
        free(d);
    }
}

static int count_files(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    if (d) closedir(d);
    return n;
}

/* ---- an independent safetensors parser (spec: huggingface/safetensors README) ---- */

typedef struct {
    char name[128];
    char dtype[16];
    int ndim;
    int64_t shape[8];
    uint64_t begin, end;
} st_entry;

typedef struct {
    unsigned char *bytes;
    size_t len;
    uint64_t header_len;
    int n;
    st_entry e[512];
    int key_order_sorted;
    char meta_format[16];
    int n_meta;
} st_file;

/* Parses path; prints and counts a failure for every violation of the spec. 0 when unreadable. */
static int st_parse(const char *path, st_file *f) {
    memset(f, 0, sizeof *f);
    f->bytes = slurp(path, &f->len);
    TU_CHECK(f->bytes && f->len >= 8, "%s: unreadable or shorter than 8 bytes", path);
    if (!f->bytes || f->len < 8) return 0;
    uint64_t N = 0;
    for (int i = 7; i >= 0; i--) N = N << 8 | f->bytes[i]; /* u64 little-endian */
    f->header_len = N;
    TU_CHECK(N > 0 && 8 + N <= f->len, "%s: header length %llu does not fit the file of %zu bytes", path,
             (unsigned long long)N, f->len);
    if (!(N > 0 && 8 + N <= f->len)) return 0;
    TU_CHECK((8 + N) % 8 == 0, "%s: data does not start 8-byte aligned (header %llu)", path, (unsigned long long)N);
    const char *h = (const char *)f->bytes + 8;
    size_t hl = (size_t)N;
    while (hl > 0 && h[hl - 1] == ' ') hl--; /* padding: spaces only, after the JSON */
    TU_CHECK(h[0] == '{' && hl > 0 && h[hl - 1] == '}', "%s: header is not a JSON object padded with spaces", path);
    qkv__json *root = qkv__json_parse(h, hl, path);
    TU_CHECK(root && root->type == QKV_JSON_OBJECT, "%s: header JSON: %s", path, qkv_last_error());
    if (!root) return 0;
    f->key_order_sorted = 1;
    const char *prev = NULL;
    for (size_t i = 0; i < qkv__json_len(root); i++) {
        const char *key = qkv__json_key_at(root, i);
        const qkv__json *v = qkv__json_at(root, i);
        if (!strcmp(key, "__metadata__")) {
            TU_CHECK(i == 0, "%s: __metadata__ is not the first key", path);
            f->n_meta = (int)qkv__json_len(v);
            const qkv__json *fmt = qkv__json_get(v, "format");
            if (fmt && fmt->type == QKV_JSON_STRING) snprintf(f->meta_format, sizeof f->meta_format, "%s", fmt->str);
            continue;
        }
        if (prev && strcmp(prev, key) >= 0) f->key_order_sorted = 0;
        prev = key;
        st_entry *e = &f->e[f->n++];
        snprintf(e->name, sizeof e->name, "%s", key);
        const qkv__json *dt = qkv__json_get(v, "dtype"), *sh = qkv__json_get(v, "shape"),
                        *off = qkv__json_get(v, "data_offsets");
        TU_CHECK(dt && dt->type == QKV_JSON_STRING && sh && sh->type == QKV_JSON_ARRAY && off &&
                     off->type == QKV_JSON_ARRAY && qkv__json_len(off) == 2 && qkv__json_len(v) == 3,
                 "%s: entry %s lacks dtype/shape/data_offsets or has extra members", path, key);
        if (!dt || !sh || !off || qkv__json_len(off) != 2) continue;
        snprintf(e->dtype, sizeof e->dtype, "%s", dt->str);
        e->ndim = (int)qkv__json_len(sh);
        for (int d = 0; d < e->ndim && d < 8; d++) e->shape[d] = qkv__json_at(sh, (size_t)d)->integer;
        e->begin = (uint64_t)qkv__json_at(off, 0)->integer;
        e->end = (uint64_t)qkv__json_at(off, 1)->integer;
    }
    qkv__json_free(root);
    /* offsets: in header order they must tile [0, data size) exactly, each end - begin = numel * 4 */
    uint64_t at = 0, data = f->len - 8 - N;
    for (int i = 0; i < f->n; i++) {
        st_entry *e = &f->e[i];
        int64_t numel = 1;
        for (int d = 0; d < e->ndim; d++) numel *= e->shape[d];
        TU_CHECK(e->begin == at && e->end >= e->begin && e->end - e->begin == (uint64_t)numel * 4 && e->end <= data,
                 "%s: %s data_offsets [%llu,%llu] (want [%llu, +%lld*4] inside %llu bytes)", path, e->name,
                 (unsigned long long)e->begin, (unsigned long long)e->end, (unsigned long long)at, (long long)numel,
                 (unsigned long long)data);
        at = e->end;
    }
    TU_CHECK(at == data, "%s: tensors cover %llu of %llu data bytes", path, (unsigned long long)at,
             (unsigned long long)data);
    return 1;
}

static const st_entry *st_find(const st_file *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->e[i].name, name)) return &f->e[i];
    return NULL;
}

static const void *st_data(const st_file *f, const st_entry *e) { return f->bytes + 8 + f->header_len + e->begin; }

/* The HF GPT2LMHeadModel state-dict names and shapes for a config, written out here from
 * modeling_gpt2.py's module tree (not taken from qkv): 2 + 12 L + 2 entries. */
static int hf_expected(const qkv_gpt_config *c, char names[][128], int64_t shapes[][2], int *ndims) {
    const int64_t C = c->n_embd;
    int n = 0;
#define ADD(nd, d0, d1, ...)                                          \
    do {                                                              \
        snprintf(names[n], 128, "transformer." __VA_ARGS__);          \
        ndims[n] = nd;                                                \
        shapes[n][0] = d0;                                            \
        shapes[n][1] = d1;                                            \
        n++;                                                          \
    } while (0)
    ADD(2, c->vocab_size, C, "wte.weight");
    ADD(2, c->n_positions, C, "wpe.weight");
    for (int l = 0; l < c->n_layer; l++) {
        ADD(1, C, 0, "h.%d.ln_1.weight", l);
        ADD(1, C, 0, "h.%d.ln_1.bias", l);
        ADD(2, C, 3 * C, "h.%d.attn.c_attn.weight", l);
        ADD(1, 3 * C, 0, "h.%d.attn.c_attn.bias", l);
        ADD(2, C, C, "h.%d.attn.c_proj.weight", l);
        ADD(1, C, 0, "h.%d.attn.c_proj.bias", l);
        ADD(1, C, 0, "h.%d.ln_2.weight", l);
        ADD(1, C, 0, "h.%d.ln_2.bias", l);
        ADD(2, C, 4 * C, "h.%d.mlp.c_fc.weight", l);
        ADD(1, 4 * C, 0, "h.%d.mlp.c_fc.bias", l);
        ADD(2, 4 * C, C, "h.%d.mlp.c_proj.weight", l);
        ADD(1, C, 0, "h.%d.mlp.c_proj.bias", l);
    }
    ADD(1, C, 0, "ln_f.weight");
    ADD(1, C, 0, "ln_f.bias");
#undef ADD
    return n;
}

/* ---- (1) the format of a saved model ---- */

static qkv_gpt_config small_config(void) {
    qkv_gpt_config c = qkv_gpt_config_gpt2();
    c.vocab_size = 37;
    c.n_positions = 16;
    c.n_embd = 8;
    c.n_layer = 2;
    c.n_head = 2;
    c.layer_norm_epsilon = 1e-6f;
    c.attn_pdrop = 0.05f;
    c.bos_token_id = 3;
    c.eos_token_id = 36;
    return c;
}

static void test_saved_format(void) {
    qkv_gpt_config cfg = small_config();
    qkv_gpt *m = qkv_gpt_new(&cfg, 7);
    char dir[512], p[1024];
    path2(dir, sizeof dir, g_tmp, "saved");
    qkv_status s = qkv_hf_gpt2_save(m, dir);
    TU_CHECK(s == QKV_OK, "save: %s", qkv_last_error());
    TU_CHECK(count_files(dir) == 2, "save left %d files in %s (want config.json + model.safetensors)",
             count_files(dir), dir);

    path2(p, sizeof p, dir, "model.safetensors");
    st_file *f = calloc(1, sizeof *f);
    if (st_parse(p, f)) {
        char names[64][128];
        int64_t shapes[64][2];
        int nd[64];
        const int n = hf_expected(&cfg, names, shapes, nd);
        TU_CHECK(f->n == n, "%d tensors in the file, HF GPT2LMHeadModel has %d (tied lm_head not saved)", f->n, n);
        int bad = 0;
        for (int i = 0; i < n; i++) {
            const st_entry *e = st_find(f, names[i]);
            if (!e) {
                printf("FAIL: %s missing from the saved file\n", names[i]);
                bad++;
                continue;
            }
            int same = e->ndim == nd[i] && e->shape[0] == shapes[i][0] && (nd[i] == 1 || e->shape[1] == shapes[i][1]);
            if (!same || strcmp(e->dtype, "F32")) {
                printf("FAIL: %s: dtype %s ndim %d shape[0] %lld, want F32 %d-D (%lld,%lld)\n", e->name, e->dtype,
                       e->ndim, (long long)e->shape[0], nd[i], (long long)shapes[i][0], (long long)shapes[i][1]);
                bad++;
                continue;
            }
            /* the bytes are the parameter's floats (little-endian host) */
            qkv_tensor *t = qkv_params_find(qkv_gpt_params(m), names[i] + strlen("transformer."));
            if (!t || memcmp(st_data(f, e), t->data, (size_t)(e->end - e->begin)) != 0) {
                printf("FAIL: %s: data differs from the parameter\n", e->name);
                bad++;
            }
        }
        TU_CHECK(bad == 0, "%d saved tensors wrong", bad);
        TU_CHECK(!st_find(f, "lm_head.weight") && !st_find(f, "transformer.h.0.attn.bias") &&
                     !st_find(f, "transformer.h.0.attn.masked_bias"),
                 "lm_head.weight / attn.bias buffers must not be written");
        TU_CHECK(f->key_order_sorted, "header keys not sorted by name (HF's writer order for one dtype)");
        TU_CHECK(f->n_meta == 1 && !strcmp(f->meta_format, "pt"), "__metadata__ must be {\"format\":\"pt\"}");
        printf("ok   saved model.safetensors: %d F32 tensors named as GPT2LMHeadModel, header %llu bytes (8-aligned), "
               "offsets contiguous to EOF, metadata format=pt, data = parameters\n",
               f->n, (unsigned long long)f->header_len);
    }
    free(f->bytes);
    free(f);

    /* config.json */
    path2(p, sizeof p, dir, "config.json");
    size_t len;
    unsigned char *text = slurp(p, &len);
    qkv__json *root = text ? qkv__json_parse((const char *)text, len, p) : NULL;
    TU_CHECK(root != NULL, "config.json does not parse: %s", qkv_last_error());
    if (root) {
        const qkv__json *v;
#define INT_KEY(k, want) \
    TU_CHECK((v = qkv__json_get(root, k)) && v->is_int && v->integer == (want), "config.json: %s", k)
#define STR_KEY(k, want) \
    TU_CHECK((v = qkv__json_get(root, k)) && v->type == QKV_JSON_STRING && !strcmp(v->str, want), "config.json: %s", k)
#define FLT_KEY(k, want) \
    TU_CHECK((v = qkv__json_get(root, k)) && v->type == QKV_JSON_NUMBER && (float)v->number == (want), "config.json: %s", k)
        STR_KEY("model_type", "gpt2");
        STR_KEY("activation_function", "gelu_new");
        v = qkv__json_get(root, "architectures");
        TU_CHECK(v && qkv__json_len(v) == 1 && !strcmp(qkv__json_at(v, 0)->str, "GPT2LMHeadModel"),
                 "config.json: architectures");
        INT_KEY("vocab_size", 37);
        INT_KEY("n_positions", 16);
        INT_KEY("n_embd", 8);
        INT_KEY("n_layer", 2);
        INT_KEY("n_head", 2);
        INT_KEY("bos_token_id", 3);
        INT_KEY("eos_token_id", 36);
        FLT_KEY("layer_norm_epsilon", 1e-6f);
        FLT_KEY("attn_pdrop", 0.05f);
        FLT_KEY("embd_pdrop", 0.1f);
        FLT_KEY("resid_pdrop", 0.1f);
        FLT_KEY("initializer_range", 0.02f);
        TU_CHECK((v = qkv__json_get(root, "n_inner")) && v->type == QKV_JSON_NULL, "config.json: n_inner null");
        TU_CHECK((v = qkv__json_get(root, "scale_attn_weights")) && v->type == QKV_JSON_BOOL && v->boolean,
                 "config.json: scale_attn_weights");
        printf("ok   saved config.json: model_type gpt2, GPT2LMHeadModel, sizes, eps, dropouts, bos/eos, n_inner null\n");
#undef INT_KEY
#undef STR_KEY
#undef FLT_KEY
    }
    qkv__json_free(root);
    free(text);

    qkv_gpt *r = qkv_hf_gpt2_load(dir);
    TU_CHECK(r && qkv_gpt_get_config(r)->layer_norm_epsilon == 1e-6f && qkv_gpt_get_config(r)->eos_token_id == 36,
             "reload: %s", qkv_last_error());
    qkv_gpt_free(r);
    qkv_gpt_free(m);
}

/* ---- (2) a checkpoint written by transformers ---- */

static void test_shared_checkpoint(void) {
    const char *cfgp = tu_shared_data("tiny-checkpoints/hf-gpt2-random-tiny/config.json");
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", cfgp);
    *strrchr(dir, '/') = '\0';
    qkv_gpt *m = qkv_hf_gpt2_load(dir);
    TU_CHECK(m != NULL, "load %s: %s", dir, qkv_last_error());
    if (!m) return;
    const qkv_gpt_config *c = qkv_gpt_get_config(m);
    TU_CHECK(c->vocab_size == 21 && c->n_positions == 1024 && c->n_embd == 2 && c->n_layer == 1 && c->n_head == 1 &&
                 c->layer_norm_epsilon == 1e-5f && c->bos_token_id == 20 && c->eos_token_id == 20 &&
                 c->attn_pdrop == 0.1f,
             "shared checkpoint config: V %lld P %lld C %lld L %d H %d", (long long)c->vocab_size,
             (long long)c->n_positions, (long long)c->n_embd, c->n_layer, c->n_head);
    char p[1100];
    path2(p, sizeof p, dir, "model.safetensors");
    st_file *f = calloc(1, sizeof *f);
    if (st_parse(p, f)) {
        qkv_params *ps = qkv_gpt_params(m);
        TU_CHECK(f->n == qkv_params_count(ps) && f->n == 16, "%d tensors in the file, %d parameters", f->n,
                 qkv_params_count(ps));
        int same = 0;
        for (int i = 0; i < f->n; i++) {
            const st_entry *e = &f->e[i];
            qkv_tensor *t = qkv_params_find(ps, e->name); /* GPT2Model: no prefix */
            int ok = t && !strcmp(e->dtype, "F32") && t->ndim == e->ndim && t->shape[0] == e->shape[0] &&
                     (e->ndim == 1 || t->shape[1] == e->shape[1]) &&
                     memcmp(st_data(f, e), t->data, (size_t)(e->end - e->begin)) == 0;
            if (!ok) printf("FAIL: %s differs between the file and the loaded model\n", e->name);
            same += ok;
        }
        TU_CHECK(same == f->n, "%d of %d tensors match", same, f->n);
        printf("ok   HF-written %s: %d tensors, shapes and values equal to the raw file\n", dir, same);
    }
    free(f->bytes);
    free(f);
    /* the model runs, and the tokenizer beside it fits its vocabulary */
    qkv_ctx *ctx = qkv_ctx_new(0);
    int32_t ids[5] = {0, 5, 20, 7, 13};
    qkv_tensor *lg = qkv_gpt_forward(ctx, m, ids, 1, 5, NULL, NULL);
    TU_CHECK(lg != NULL, "forward on the shared checkpoint: %s", qkv_ctx_error(ctx));
    qkv_ctx_free(ctx);
    /* GPT-2's real tokenizer (50257 ids) does not fit this 21-token model */
    const char *d = getenv("QKV_SHARED_DATA");
    char tdir[1024];
    snprintf(tdir, sizeof tdir, "%s/gpt2-tokenizer", d && *d ? d : "../shared/data");
    qkv_tokenizer *tok = qkv_tokenizer_load_dir(tdir);
    if (tok) {
        qkv_status s = qkv_hf_check_vocab(m, tok);
        TU_CHECK(s == QKV_ERR_RANGE && strstr(qkv_last_error(), "50257") && strstr(qkv_last_error(), " 21"),
                 "check_vocab(21-token model, GPT-2 tokenizer): %d %s", (int)s, qkv_last_error());
        printf("ok   GPT-2 tokenizer vs the 21-token model -> %s\n", qkv_last_error());
    }
    qkv_tokenizer_free(tok);
    qkv_gpt_free(m);
}

/* ---- (3) bad input ---- */

/* A failed load with a one-line message containing every needle. */
static void expect_load_fail(const char *what, const char *dir, const char *n1, const char *n2) {
    qkv_gpt *m = qkv_hf_gpt2_load(dir);
    const char *msg = qkv_last_error();
    int ok = !m && msg && *msg && !strchr(msg, '\n') && strstr(msg, n1) && (!n2 || strstr(msg, n2));
    TU_CHECK(ok, "%s: %s; message \"%s\" should name \"%s\"%s%s", what, m ? "loaded" : "failed", msg, n1,
             n2 ? " and " : "", n2 ? n2 : "");
    if (ok) printf("ok   bad input %-30s -> %s\n", what, msg);
    qkv_gpt_free(m);
}

static void write_text(const char *dir, const char *file, const char *text) {
    char p[1024];
    path2(p, sizeof p, dir, file);
    spit(p, text, strlen(text));
}

/* The good model's config.json with one line replaced ("  \"key\": value" -> repl), into dir. */
static void config_with(const char *good, const char *dir, const char *key, const char *repl) {
    char p[1024], k[128];
    path2(p, sizeof p, good, "config.json");
    size_t n;
    char *text = (char *)slurp(p, &n);
    text[n] = 0;
    snprintf(k, sizeof k, "\"%s\":", key);
    char *at = strstr(text, k), *eol = at ? strpbrk(at, ",\n") : NULL;
    if (!at || !eol) {
        printf("FAIL: config.json has no %s\n", key);
        exit(1);
    }
    char out[8192];
    snprintf(out, sizeof out, "%.*s%s%s", (int)(at - text), text, repl, eol);
    write_text(dir, "config.json", out);
    free(text);
}

static void test_bad_input(void) {
    qkv_gpt_config cfg = small_config();
    qkv_gpt *m = qkv_gpt_new(&cfg, 9);
    char good[512], d[512], p[1024];
    path2(good, sizeof good, g_tmp, "good");
    TU_CHECK(qkv_hf_gpt2_save(m, good) == QKV_OK, "save good: %s", qkv_last_error());

    path2(d, sizeof d, g_tmp, "does-not-exist");
    expect_load_fail("missing directory", d, "does-not-exist", "No such file");
    expect_load_fail("NULL directory", NULL, "no directory", NULL);
    path2(p, sizeof p, good, "config.json");
    expect_load_fail("a file, not a directory", p, "not a directory", NULL);

    path2(d, sizeof d, g_tmp, "bad");
    copy_model(good, d);
    path2(p, sizeof p, d, "model.safetensors");
    unlink(p);
    expect_load_fail("missing model.safetensors", d, "model.safetensors", NULL);
    copy_model(good, d);
    path2(p, sizeof p, d, "config.json");
    unlink(p);
    expect_load_fail("missing config.json", d, "config.json", NULL);

    /* truncations of model.safetensors */
    size_t len;
    char gp[1024];
    path2(gp, sizeof gp, good, "model.safetensors");
    unsigned char *st = slurp(gp, &len);
    uint64_t N = 0;
    for (int i = 7; i >= 0; i--) N = N << 8 | st[i];
    const size_t cuts[] = {0, 5, 8, 8 + (size_t)N / 2, 8 + (size_t)N - 1, 8 + (size_t)N, 8 + (size_t)N + 100, len - 1};
    copy_model(good, d);
    path2(p, sizeof p, d, "model.safetensors");
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "truncated at %zu of %zu", cuts[i], len);
        spit(p, st, cuts[i]);
        expect_load_fail(what, d, "model.safetensors", NULL);
    }
    /* corrupt headers */
    unsigned char *bad = malloc(len);
    memcpy(bad, st, len);
    bad[6] = 0x7f; /* header length ~2^55 */
    spit(p, bad, len);
    expect_load_fail("header length 2^55", d, "model.safetensors", NULL);
    memcpy(bad, st, len);
    bad[8] = '[';
    spit(p, bad, len);
    expect_load_fail("header not JSON", d, "model.safetensors", "JSON");
    memcpy(bad, st, len);
    char *f32 = memmem(bad + 8, (size_t)N, "\"F32\"", 5);
    memcpy(f32, "\"F3X\"", 5);
    spit(p, bad, len);
    expect_load_fail("unknown dtype string", d, "model.safetensors", "F3X");
    memcpy(bad, st, len);
    f32 = memmem(bad + 8, (size_t)N, "\"F32\"", 5);
    memcpy(f32, "\"I32\"", 5); /* valid safetensors, but not a float */
    spit(p, bad, len);
    expect_load_fail("integer dtype", d, "I32", "bias");
    free(bad);
    free(st);

    /* config.json not matching the tensors */
    copy_model(good, d);
    config_with(good, d, "n_embd", "\"n_embd\": 12");
    expect_load_fail("n_embd mismatch", d, "(37,8)", "(37,12)");
    config_with(good, d, "vocab_size", "\"vocab_size\": 40");
    expect_load_fail("vocab_size mismatch", d, "wte.weight", "(40,8)");
    config_with(good, d, "n_layer", "\"n_layer\": 3");
    expect_load_fail("n_layer 3 (tensor missing)", d, "h.2.ln_1.weight", "missing");
    config_with(good, d, "n_layer", "\"n_layer\": 1");
    expect_load_fail("n_layer 1 (extra tensors)", d, "unexpected tensor 'transformer.h.1.", NULL);
    /* malformed config.json */
    config_with(good, d, "n_head", "\"n_head\": \"2\"");
    expect_load_fail("n_head a string", d, "n_head", "string");
    config_with(good, d, "n_head", "\"n_head\": 3");
    expect_load_fail("n_embd % n_head", d, "config.json", "divisible");
    config_with(good, d, "activation_function", "\"activation_function\": \"relu\"");
    expect_load_fail("activation relu", d, "activation_function", "relu");
    config_with(good, d, "model_type", "\"model_type\": \"bert\"");
    expect_load_fail("model_type bert", d, "model_type", "bert");
    config_with(good, d, "n_inner", "\"n_inner\": 20");
    expect_load_fail("n_inner 20", d, "n_inner", NULL);
    config_with(good, d, "n_layer", "\"n_layer\": 65");
    expect_load_fail("n_layer 65", d, "n_layer", "65");
    config_with(good, d, "layer_norm_epsilon", "\"layer_norm_epsilon\": -1");
    expect_load_fail("negative eps", d, "layer_norm_epsilon", NULL);
    write_text(d, "config.json", "{\"n_embd\": 8,}");
    expect_load_fail("config.json bad JSON", d, "config.json", "invalid JSON");
    write_text(d, "config.json", "[1, 2]");
    expect_load_fail("config.json not an object", d, "config.json", "object");
    write_text(d, "config.json", "");
    expect_load_fail("config.json empty", d, "config.json", NULL);

    /* tensor sets written with qkv's writer: lm_head that differs, duplicates, an extra tensor */
    copy_model(good, d);
    qkv_params *ps = qkv_gpt_params(m);
    const int n = qkv_params_count(ps);
    qkv_st_entry *e = calloc((size_t)n + 2, sizeof *e);
    for (int i = 0; i < n; i++) {
        qkv_tensor *t = qkv_params_get(ps, i);
        e[i] = (qkv_st_entry){t->name, t->ndim, t->shape, t->data};
    }
    qkv_tensor *wte = qkv_params_find(ps, "wte.weight");
    float *head = malloc(sizeof(float) * 37 * 8);
    memcpy(head, wte->data, sizeof(float) * 37 * 8);
    path2(p, sizeof p, d, "model.safetensors");
    e[n] = (qkv_st_entry){"lm_head.weight", 2, wte->shape, head};
    TU_CHECK(qkv_safetensors_write(p, e, n + 1, NULL, 0) == QKV_OK, "write: %s", qkv_last_error());
    qkv_gpt *ok = qkv_hf_gpt2_load(d);
    TU_CHECK(ok != NULL, "bare names + lm_head equal to wte must load: %s", qkv_last_error());
    qkv_gpt_free(ok);
    head[5] += 1.0f;
    TU_CHECK(qkv_safetensors_write(p, e, n + 1, NULL, 0) == QKV_OK, "write: %s", qkv_last_error());
    expect_load_fail("lm_head differs from wte", d, "lm_head.weight", "tied");
    e[n] = (qkv_st_entry){"transformer.ln_f.bias", 1, qkv_params_find(ps, "ln_f.bias")->shape,
                          qkv_params_find(ps, "ln_f.bias")->data};
    TU_CHECK(qkv_safetensors_write(p, e, n + 1, NULL, 0) == QKV_OK, "write: %s", qkv_last_error());
    expect_load_fail("name with and without prefix", d, "ln_f.bias", "twice");
    e[n] = (qkv_st_entry){"h.0.attn.rotary.weight", 1, qkv_params_find(ps, "ln_f.bias")->shape,
                          qkv_params_find(ps, "ln_f.bias")->data};
    TU_CHECK(qkv_safetensors_write(p, e, n + 1, NULL, 0) == QKV_OK, "write: %s", qkv_last_error());
    expect_load_fail("an extra tensor", d, "unexpected tensor 'h.0.attn.rotary.weight'", NULL);
    e[n] = (qkv_st_entry){"h.5.attn.bias", 1, qkv_params_find(ps, "ln_f.bias")->shape,
                          qkv_params_find(ps, "ln_f.bias")->data};
    TU_CHECK(qkv_safetensors_write(p, e, n + 1, NULL, 0) == QKV_OK, "write: %s", qkv_last_error());
    expect_load_fail("mask buffer of layer 5 of 2", d, "h.5.attn.bias", NULL);
    e[n] = (qkv_st_entry){"h.1.attn.masked_bias", 1, qkv_params_find(ps, "ln_f.bias")->shape,
                          qkv_params_find(ps, "ln_f.bias")->data};
    TU_CHECK(qkv_safetensors_write(p, e, n + 1, NULL, 0) == QKV_OK, "write: %s", qkv_last_error());
    ok = qkv_hf_gpt2_load(d);
    TU_CHECK(ok != NULL, "h.1.attn.masked_bias must be ignored: %s", qkv_last_error());
    qkv_gpt_free(ok);
    free(head);
    free(e);

    /* a vocabulary larger than the model */
    qkv_tokenizer *bytes = qkv_tokenizer_new_bytes(); /* 256 ids > 37 */
    qkv_status s = qkv_hf_check_vocab(m, bytes);
    const char *msg = qkv_last_error();
    TU_CHECK(s == QKV_ERR_RANGE && strstr(msg, "256") && strstr(msg, "37") && !strchr(msg, '\n'),
             "check_vocab 256 > 37: %d \"%s\"", (int)s, msg);
    if (s == QKV_ERR_RANGE) printf("ok   bad input %-30s -> %s\n", "tokenizer 256 > vocab 37", msg);
    qkv_gpt_config big = small_config();
    big.vocab_size = 256;
    qkv_gpt *mb = qkv_gpt_new(&big, 1);
    TU_CHECK(qkv_hf_check_vocab(mb, bytes) == QKV_OK, "tokenizer 256 == vocab 256 refused: %s", qkv_last_error());
    TU_CHECK(qkv_hf_check_vocab(NULL, bytes) == QKV_ERR_ARG, "NULL model accepted");
    qkv_gpt_free(mb);
    qkv_tokenizer_free(bytes);

    /* config reader on its own */
    qkv_gpt_config rc = {0};
    path2(p, sizeof p, g_tmp, "old.json");
    const char *old = "{\"n_ctx\": 77, \"n_embd\": 16, \"n_head\": 4, \"n_layer\": 1, \"vocab_size\": 10}";
    spit(p, old, strlen(old));
    s = qkv_hf_gpt2_config_read(p, &rc);
    TU_CHECK(s == QKV_OK && rc.n_positions == 77 && rc.n_embd == 16 && rc.layer_norm_epsilon == 1e-5f &&
                 rc.bos_token_id == 50256 && rc.embd_pdrop == 0.1f,
             "n_ctx fallback and GPT2Config defaults: %s (P %lld)", qkv_last_error(), (long long)rc.n_positions);

    rm_dir(d);
    rm_dir(good);
    qkv_gpt_free(m);
}

/* ---- (4) saving over an existing model is atomic; an unwritable path fails cleanly ---- */

static int params_equal(qkv_gpt *a, qkv_gpt *b) {
    qkv_params *pa = qkv_gpt_params(a), *pb = qkv_gpt_params(b);
    if (qkv_params_count(pa) != qkv_params_count(pb)) return 0;
    for (int i = 0; i < qkv_params_count(pa); i++) {
        qkv_tensor *x = qkv_params_get(pa, i), *y = qkv_params_get(pb, i);
        if (qkv_tensor_numel(x) != qkv_tensor_numel(y) ||
            memcmp(x->data, y->data, sizeof(float) * (size_t)qkv_tensor_numel(x)))
            return 0;
    }
    return 1;
}

static void test_atomic_save(void) {
    qkv_gpt_config cfg = small_config();
    cfg.vocab_size = 20000; /* ~0.7 MB of weights: a save takes long enough to be interrupted */
    cfg.n_embd = 8;
    qkv_gpt *a = qkv_gpt_new(&cfg, 1), *b = qkv_gpt_new(&cfg, 2);
    char dir[512], p[1024];
    path2(dir, sizeof dir, g_tmp, "atomic");
    TU_CHECK(qkv_hf_gpt2_save(a, dir) == QKV_OK, "save a: %s", qkv_last_error());
    write_text(dir, "vocab.json", "{\"a\": 0}"); /* someone else's file: must be left alone */
    TU_CHECK(qkv_hf_gpt2_save(b, dir) == QKV_OK, "save b over a: %s", qkv_last_error());
    qkv_gpt *r = qkv_hf_gpt2_load(dir);
    TU_CHECK(r && params_equal(r, b), "after saving b over a, the directory must hold b");
    qkv_gpt_free(r);
    TU_CHECK(count_files(dir) == 3, "%d files in %s (config.json, model.safetensors, vocab.json)", count_files(dir), dir);

    /* Kill a process in the middle of saving (at moments spread over a save's duration): the
     * directory must still load, as exactly a or exactly b. */
    int olds = 0, news = 0, bad = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    TU_CHECK(qkv_hf_gpt2_save(a, dir) == QKV_OK, "save a again: %s", qkv_last_error());
    clock_gettime(CLOCK_MONOTONIC, &t1);
    const long save_ns = (t1.tv_sec - t0.tv_sec) * 1000000000L + (t1.tv_nsec - t0.tv_nsec);
    for (int k = 0; k < 12; k++) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            qkv_hf_gpt2_save(b, dir);
            _exit(0);
        }
        const long ns = save_ns / 8 * k + 100000; /* 0.1 ms .. ~1.4 saves */
        struct timespec ts = {ns / 1000000000L, ns % 1000000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        r = qkv_hf_gpt2_load(dir);
        if (r && params_equal(r, a)) olds++;
        else if (r && params_equal(r, b)) news++;
        else {
            bad++;
            printf("FAIL: after a killed save the directory holds neither model: %s\n", r ? "mixed" : qkv_last_error());
        }
        qkv_gpt_free(r);
        TU_CHECK(qkv_hf_gpt2_save(a, dir) == QKV_OK, "restore a: %s", qkv_last_error());
    }
    TU_CHECK(bad == 0, "%d killed saves left a broken directory", bad);
    printf("ok   12 saves (%.1f ms each) killed mid-way: directory loaded as the old model %d times, the new one %d "
           "times, broken 0\n", save_ns / 1e6, olds, news);

    /* unwritable destinations */
    path2(p, sizeof p, dir, "vocab.json/model"); /* below a regular file */
    qkv_status s = qkv_hf_gpt2_save(a, p);
    const char *msg = qkv_last_error();
    TU_CHECK(s == QKV_ERR_IO && strstr(msg, "vocab.json/model") && !strchr(msg, '\n'), "save under a file: %d \"%s\"",
             (int)s, msg);
    if (s == QKV_ERR_IO) printf("ok   unwritable %-30s -> %s\n", "path below a file", msg);
    s = qkv_hf_gpt2_save(a, "/proc/qkv-cannot-exist");
    TU_CHECK(s == QKV_ERR_IO, "save into /proc: %d \"%s\"", (int)s, qkv_last_error());
    if (s == QKV_ERR_IO) printf("ok   unwritable %-30s -> %s\n", "/proc/qkv-cannot-exist", qkv_last_error());
    /* model.safetensors is a directory: the rename fails, the temporary file is removed */
    char d2[512];
    path2(d2, sizeof d2, g_tmp, "blocked");
    mkdir(d2, 0777);
    path2(p, sizeof p, d2, "model.safetensors");
    mkdir(p, 0777);
    path2(p, sizeof p, d2, "model.safetensors/x");
    spit(p, "x", 1);
    s = qkv_hf_gpt2_save(a, d2);
    TU_CHECK(s == QKV_ERR_IO && count_files(d2) == 1, "save onto a directory named model.safetensors: %d, %d files",
             (int)s, count_files(d2));
    if (s == QKV_ERR_IO) printf("ok   unwritable %-30s -> %s\n", "model.safetensors is a dir", qkv_last_error());
    TU_CHECK(qkv_hf_gpt2_save(NULL, d2) == QKV_ERR_ARG && qkv_hf_gpt2_save(a, "") == QKV_ERR_ARG, "NULL/empty args");
    rm_dir(d2);
    rm_dir(dir);
    qkv_gpt_free(a);
    qkv_gpt_free(b);
}

int main(void) {
    snprintf(g_tmp, sizeof g_tmp, "/tmp/qkv_test_hf_gpt2_XXXXXX");
    if (!mkdtemp(g_tmp)) {
        printf("FAIL: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    test_saved_format();
    test_bad_input();
    test_atomic_save();
    int rc = tu_finish("test_hf_gpt2 (format, bad input, atomic save)");
    /* last: it skips (exit 77) when ../shared/data is absent */
    const char *d = getenv("QKV_SHARED_DATA");
    char probe[1024];
    snprintf(probe, sizeof probe, "%s/tiny-checkpoints/hf-gpt2-random-tiny/config.json", d && *d ? d : "../shared/data");
    if (rc == 0 && access(probe, R_OK) != 0) {
        rm_dir(g_tmp);
        tu_skip("shared data (tiny-checkpoints/hf-gpt2-random-tiny) not found; set QKV_SHARED_DATA");
    }
    if (access(probe, R_OK) == 0) test_shared_checkpoint();
    rm_dir(g_tmp);
    return tu_finish("test_hf_gpt2");
}
