/* test_trainer.c — the training loop (src/train/trainer.c) on a tiny GPT and a generated text.
 *
 * What is compared, and against what:
 *   - one optimizer step against the same update computed here in double from the tape's gradient:
 *     AdamW's first step is p - lr * (wd * p * decay + g / (|g| + eps)), where decay follows the Hugging
 *     Face Trainer rule decided here by name (no decay for biases and LayerNorm weights, decay for the
 *     embeddings and every matrix). Bound per element: STEP_TOL 1e-6 of lr plus one float ulp of the
 *     result (p is stored in float; a LayerNorm weight near 1 rounds by up to 6e-8). A wrong decay rule
 *     is off by lr * wd * p = 5e-3 * p, thousands of times the bound.
 *   - gradient accumulation: B=4 x 1 and B=2 x 2 see the same rows (rows are a function of (seed, step,
 *     row)), so after 3 steps the parameters agree to ACCUM_TOL 2e-5 relative (the mean over 4 rows is
 *     summed in another order: float rounding only).
 *   - exact resume, bit for bit: runs interrupted with stop_after, with time_limit, and resumed from an
 *     older checkpoint after the run had gone further, each give the same log.jsonl losses, grad norms,
 *     learning rates and evaluations and the same model.safetensors bytes as the uninterrupted run
 *     (dropout on, grad_accum 2, so the dropout and batch streams are covered).
 *   - the optimizer state round trip through optimizer.safetensors in memory: the next step after a
 *     save/load into a fresh trainer equals the next step of the original (bit for bit).
 *   - learning: the loss falls below half of ln(V) on a text with strong structure.
 *   - files: checkpoints are complete (trainer_state.json, optimizer.safetensors, config.json,
 *     model.safetensors, vocab.json), loss.svg has one polyline point per logged step, --epochs gives
 *     ceil(E * train tokens / tokens per step) steps, save_total_limit prunes.
 *   - errors name the flag: --block-size over an --init model's n_positions, a tokenizer bigger than
 *     the --init model, resume with another --lr, a fresh run into a folder that holds a run.
 */
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"
#include "qkv/hf.h"
#include "qkv/train.h"

#define STEP_TOL 1e-6
#define ACCUM_TOL 2e-5

static char root[256];
static char data_path[512];

static char *pth(char *buf, size_t n, const char *rel) {
    snprintf(buf, n, "%s/%s", root, rel);
    return buf;
}

/* A text with structure a tiny model learns quickly: short sentences from a small grammar. */
static void write_data(void) {
    static const char *subj[] = {"the cat", "a dog", "my bird", "the fox", "one cow"};
    static const char *verb[] = {"sees", "likes", "eats", "finds"};
    static const char *obj[] = {"the hat.", "a red ball.", "some corn.", "the moon."};
    qkv_rng r;
    qkv_rng_seed(&r, 5);
    snprintf(data_path, sizeof data_path, "%s/data.txt", root);
    FILE *f = fopen(data_path, "w");
    for (int i = 0; i < 600; i++)
        fprintf(f, "%s %s %s\n", subj[qkv_rng_u64(&r) % 5], verb[qkv_rng_u64(&r) % 4], obj[qkv_rng_u64(&r) % 4]);
    fclose(f);
}

static const char *data_list[1];

static qkv_train_opts tiny_opts(const char *out) {
    qkv_train_opts o = qkv_train_default_opts();
    data_list[0] = data_path;
    o.data = data_list;
    o.n_data = 1;
    o.tokenizer = "chars";
    o.n_layer = 2;
    o.n_head = 2;
    o.n_embd = 32;
    o.block_size = 16;
    o.batch_size = 4;
    o.grad_accum = 2;
    o.dropout = 0.1f;
    o.lr = 3e-3f;
    o.weight_decay = 0.1f;
    o.warmup_steps = 3;
    o.steps = 12;
    o.eval_every = 4;
    o.eval_batches = 2;
    o.save_every = 4;
    o.seed = 1234;
    o.out = out;
    return o;
}

static char *slurp(const char *p, size_t *len) {
    FILE *f = fopen(p, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    size_t got = fread(b, 1, (size_t)n, f);
    b[got] = 0;
    fclose(f);
    if (len) *len = got;
    return b;
}

static int same_file(const char *a, const char *b) {
    size_t la, lb;
    char *x = slurp(a, &la), *y = slurp(b, &lb);
    int same = x && y && la == lb && memcmp(x, y, la) == 0;
    free(x);
    free(y);
    return same;
}

/* log.jsonl without the tokens_per_sec values (the only field that depends on the clock). */
static char *log_without_speed(const char *dir) {
    char p[600];
    snprintf(p, sizeof p, "%s/log.jsonl", dir);
    char *s = slurp(p, NULL);
    if (!s) return NULL;
    char *w = s;
    for (char *r = s; *r;) {
        if (!strncmp(r, ",\"tokens_per_sec\":", 18)) {
            while (*r && *r != '}') r++;
        } else {
            *w++ = *r++;
        }
    }
    *w = 0;
    return s;
}

static int count_lines(const char *s, const char *needle) {
    int n = 0;
    for (const char *l = s; l && *l;) {
        const char *e = strchr(l, '\n');
        size_t len = e ? (size_t)(e - l) : strlen(l);
        char buf[512];
        snprintf(buf, sizeof buf, "%.*s", (int)(len < 511 ? len : 511), l);
        n += strstr(buf, needle) != NULL;
        l = e ? e + 1 : NULL;
    }
    return n;
}

static int run(const qkv_train_opts *o, const char *what) {
    qkv_status s = qkv_train_run(o);
    if (s != QKV_OK) printf("  %s: %s\n", what, qkv_last_error());
    return s == QKV_OK;
}

static int exists(const char *dir, const char *rel) {
    char p[700];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    return access(p, F_OK) == 0;
}

/* ---- exact resume ---- */

static void compare_runs(const char *a, const char *b, const char *what) {
    char pa[600], pb[600];
    snprintf(pa, sizeof pa, "%s/model.safetensors", a);
    snprintf(pb, sizeof pb, "%s/model.safetensors", b);
    int same_model = same_file(pa, pb);
    char *la = log_without_speed(a), *lb = log_without_speed(b);
    int same_log = la && lb && !strcmp(la, lb);
    TU_CHECK(same_model, "%s: final model.safetensors bytes differ", what);
    TU_CHECK(same_log, "%s: log.jsonl (losses, grad norms, lr, evals) differs", what);
    if (la && lb && !same_log) printf("--- uninterrupted:\n%s--- resumed:\n%s", la, lb);
    printf("%-4s %s: model.safetensors %s, log.jsonl (%d lines) %s\n", same_model && same_log ? "ok" : "FAIL", what,
           same_model ? "bit-identical" : "DIFFERS", count_lines(la, "step"), same_log ? "identical" : "DIFFERS");
    free(la);
    free(lb);
}

static void test_resume(void) {
    char full[512], part[512], timed[512], late[512];
    pth(full, sizeof full, "full");
    pth(part, sizeof part, "part");
    pth(timed, sizeof timed, "timed");
    pth(late, sizeof late, "late");

    qkv_train_opts o = tiny_opts(full);
    if (!run(&o, "uninterrupted run")) {
        TU_CHECK(0, "uninterrupted run");
        return;
    }
    char *log = log_without_speed(full);
    TU_CHECK(log && count_lines(log, "\"loss\"") == 12 && count_lines(log, "\"eval_loss\"") == 3,
             "12 step lines and 3 eval lines (steps 4, 8, 12)");
    free(log);
    TU_CHECK(exists(full, "checkpoint-4/trainer_state.json") && exists(full, "checkpoint-8/optimizer.safetensors") &&
             exists(full, "checkpoint-12/model.safetensors") && exists(full, "checkpoint-12/config.json") &&
             exists(full, "checkpoint-12/vocab.json") && exists(full, "config.json") && exists(full, "vocab.json") &&
             exists(full, "loss.svg") && exists(full, "tokens.bin"), "checkpoint and output files present");

    /* interrupted after step 5 (no checkpoint there in the full run), then resumed from the newest */
    o = tiny_opts(part);
    o.stop_after = 5;
    int ok = run(&o, "run stopped after 5");
    TU_CHECK(ok && exists(part, "checkpoint-5/trainer_state.json") && !exists(part, "checkpoint-8"),
             "stop_after 5 saves checkpoint-5 and stops");
    o = tiny_opts(part);
    o.resume = "";
    ok = ok && run(&o, "resumed run");
    if (ok) compare_runs(full, part, "stop after 5, resume");

    /* a time limit that every step passes: stops after step 1; resumed twice with the limit, then freely */
    o = tiny_opts(timed);
    o.time_limit = 1e-9;
    ok = run(&o, "timed run");
    TU_CHECK(ok && exists(timed, "checkpoint-1"), "time limit stops after step 1");
    o.resume = "";
    ok = ok && run(&o, "timed resume");
    TU_CHECK(ok && exists(timed, "checkpoint-2"), "resumed with the time limit: one more step");
    o.time_limit = 0;
    ok = ok && run(&o, "final resume");
    if (ok) compare_runs(full, timed, "time-limit stops, resumed twice");

    /* the run went to the end; resume from checkpoint-8 after deleting the later ones: log lines past 8
     * must be dropped and redone */
    o = tiny_opts(late);
    ok = run(&o, "late run");
    char ck[600], cmd[1400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s/checkpoint-12'", late);
    ok = ok && system(cmd) == 0;
    snprintf(ck, sizeof ck, "%s/checkpoint-8", late);
    o.resume = ck;
    ok = ok && run(&o, "resume from checkpoint-8");
    if (ok) compare_runs(full, late, "resume from an older checkpoint");

    /* resuming with another lr is refused, naming the flag */
    o = tiny_opts(part);
    o.resume = "";
    o.lr = 1e-3f;
    qkv_status s = qkv_train_run(&o);
    TU_CHECK(s != QKV_OK && strstr(qkv_last_error(), "--lr") && strstr(qkv_last_error(), "0.003"),
             "resume with another --lr: %s", qkv_last_error());
    /* a fresh run into a folder that holds one is refused; --overwrite starts again */
    o = tiny_opts(part);
    s = qkv_train_run(&o);
    TU_CHECK(s != QKV_OK && strstr(qkv_last_error(), "already holds a training run"), "fresh run into a used OUT: %s",
             qkv_last_error());
    o.overwrite = 1;
    o.steps = 4;
    o.save_every = 1;
    o.save_total_limit = 2;
    TU_CHECK(run(&o, "overwrite") && !exists(part, "checkpoint-12") && !exists(part, "checkpoint-2") &&
             exists(part, "checkpoint-3") && exists(part, "checkpoint-4"), "--overwrite restarts; save_total_limit 2 keeps 3, 4");

    /* the plot has one point per logged step */
    char svgp[600];
    snprintf(svgp, sizeof svgp, "%s/loss.svg", full);
    char *svg = slurp(svgp, NULL);
    const char *pts = svg ? strstr(svg, "points=\"") : NULL;
    int n = 0;
    if (pts)
        for (const char *q = pts + 8; *q && *q != '"'; q++) n += *q == ',';
    TU_CHECK(svg && strstr(svg, "<svg") && strstr(svg, "</svg>") && n == 12, "loss.svg: 12 polyline points (%d)", n);
    int circles = 0;
    for (const char *q = svg; q && (q = strstr(q, "<circle")); q++) circles++;
    TU_CHECK(circles == 3 + 1, "loss.svg: 3 eval dots + legend (%d)", circles);
    free(svg);
}

/* ---- one step against the formula ---- */

static int decays(const char *name) {
    size_t n = strlen(name);
    if (n >= 5 && !strcmp(name + n - 5, ".bias")) return 0;
    if (strstr(name, "ln_")) return 0; /* ln_1, ln_2, ln_f weights (their biases end in .bias) */
    return 1;
}

static void test_one_step(void) {
    char out[512];
    pth(out, sizeof out, "tok");
    size_t len;
    char *text = slurp(data_path, &len);
    qkv_tokenizer *tok = qkv_tokenizer_new_chars(text, len);
    free(text);
    const char *paths[1] = {data_path};
    qkv_data_opts dopt = qkv_data_default_opts();
    dopt.paths = paths;
    dopt.n_paths = 1;
    qkv_dataset *d = qkv_dataset_build(&dopt, tok);
    qkv_gpt_config c = qkv_gpt_config_gpt2();
    c.vocab_size = qkv_tokenizer_vocab_size(tok);
    c.n_positions = 16, c.n_embd = 32, c.n_layer = 2, c.n_head = 2;
    c.embd_pdrop = c.attn_pdrop = c.resid_pdrop = 0;
    qkv_gpt *m = qkv_gpt_new(&c, 9), *ref = qkv_gpt_new(&c, 9);
    qkv_train_opts o = tiny_opts(out);
    o.grad_accum = 1;
    o.lr = 1e-2f;
    o.weight_decay = 0.5f;
    o.warmup_steps = 0;
    o.max_grad_norm = 0; /* no clipping: the update is the formula's */
    qkv_trainer *t = qkv_trainer_new(m, d, &o);
    TU_CHECK(t != NULL, "trainer: %s", qkv_last_error());
    if (!t) exit(1);

    /* the reference gradient: same batch, same model, through the tape */
    enum { B = 4, T = 16 };
    int32_t ids[B * T], tg[B * T];
    qkv_dataset_batch(d, o.seed, 0, 0, B, T, ids, tg);
    qkv_ctx *ctx = qkv_ctx_new(0);
    qkv_params *rp = qkv_gpt_params(ref);
    qkv_params_zero_grad(rp);
    qkv_tensor *loss = NULL;
    qkv_gpt_forward(ctx, ref, ids, B, T, tg, &loss);
    qkv_backward(ctx, loss);
    float ref_loss = loss ? loss->data[0] : NAN;

    qkv_train_stats st;
    qkv_status s = qkv_trainer_step(t, &st);
    TU_CHECK(s == QKV_OK && st.step == 1 && st.loss == ref_loss && st.lr == o.lr, "step 1: loss %.6f (ref %.6f), lr %g",
             (double)st.loss, (double)ref_loss, (double)st.lr);
    double worst = 0; /* max |got - want| / (STEP_TOL lr + one float ulp of want) */
    int n_decay = 0, n_nodecay = 0;
    qkv_params *p = qkv_gpt_params(m);
    for (int i = 0; i < qkv_params_count(p); i++) {
        const qkv_tensor *a = qkv_params_get(p, i), *r = qkv_params_get(rp, i);
        int dec = decays(r->name);
        n_decay += dec, n_nodecay += !dec;
        for (int64_t j = 0; j < qkv_tensor_numel(a); j++) {
            double p0 = r->data[j], g = r->grad[j];
            double want = p0 - (double)o.lr * (0.5 * p0 * dec + g / (fabs(g) + 1e-8));
            double err = fabs(a->data[j] - want) / (STEP_TOL * o.lr + ldexp(fabs(want), -23));
            if (err > worst) worst = err;
        }
    }
    TU_CHECK(worst <= 1.0, "AdamW step 1 with the HF decay rule vs formula: error %.2f x the bound", worst);
    printf("%-4s one step vs double formula: worst error %.2f x (1e-6 lr + 1 ulp) over %d decayed / %d not decayed "
           "tensors\n", worst <= 1.0 ? "ok" : "FAIL", worst, n_decay, n_nodecay);

    /* optimizer state round trip in memory: a fresh trainer loaded from the files steps like the original */
    s = qkv_trainer_step(t, &st);
    mkdir(out, 0777);
    TU_CHECK(qkv_trainer_save_optimizer(t, out) == QKV_OK, "save optimizer: %s", qkv_last_error());
    qkv_gpt *m2 = qkv_gpt_new(&c, 1);
    memcpy(qkv_params_data(qkv_gpt_params(m2)), qkv_params_data(p), sizeof(float) * (size_t)qkv_params_numel(p));
    qkv_trainer *t2 = qkv_trainer_new(m2, d, &o);
    TU_CHECK(qkv_trainer_load_optimizer(t2, out) == QKV_OK && qkv_trainer_steps_done(t2) == 2, "load optimizer: %s",
             qkv_last_error());
    qkv_train_stats s1, s2;
    qkv_trainer_step(t, &s1);
    qkv_trainer_step(t2, &s2);
    TU_CHECK(s1.loss == s2.loss && s1.grad_norm == s2.grad_norm && s1.lr == s2.lr &&
             !memcmp(qkv_params_data(p), qkv_params_data(qkv_gpt_params(m2)), sizeof(float) * (size_t)qkv_params_numel(p)),
             "step 3 after an optimizer save/load equals step 3 of the original, bit for bit");
    float el, ep;
    TU_CHECK(qkv_trainer_evaluate(t, &el, &ep) == QKV_OK && fabsf(ep - expf(el)) <= 1e-5f * ep && el > 0,
             "evaluate: loss %.4f ppl %.3f = exp(loss)", (double)el, (double)ep);
    /* the tokens are checked against the same loss a second time: evaluation does not change training */
    float el2;
    qkv_trainer_evaluate(t, &el2, NULL);
    TU_CHECK(el == el2, "evaluation is deterministic");

    /* a corrupt optimizer file is refused with the tensor's name */
    char op[700];
    snprintf(op, sizeof op, "%s/optimizer.safetensors", out);
    qkv_trainer *t3 = qkv_trainer_new(m2, d, &o);
    FILE *f = fopen(op, "r+b");
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fclose(f);
    TU_CHECK(truncate(op, sz - 4) == 0 && qkv_trainer_load_optimizer(t3, out) != QKV_OK &&
             strstr(qkv_last_error(), "optimizer.safetensors"), "truncated optimizer file: %s", qkv_last_error());

    qkv_trainer_free(t);
    qkv_trainer_free(t2);
    qkv_trainer_free(t3);
    qkv_ctx_free(ctx);
    qkv_gpt_free(m);
    qkv_gpt_free(m2);
    qkv_gpt_free(ref);
    qkv_dataset_free(d);
    qkv_tokenizer_free(tok);
}

/* ---- gradient accumulation ---- */

static void test_accum(void) {
    size_t len;
    char *text = slurp(data_path, &len);
    qkv_tokenizer *tok = qkv_tokenizer_new_chars(text, len);
    free(text);
    const char *paths[1] = {data_path};
    qkv_data_opts dopt = qkv_data_default_opts();
    dopt.paths = paths;
    dopt.n_paths = 1;
    qkv_dataset *d = qkv_dataset_build(&dopt, tok);
    qkv_gpt_config c = qkv_gpt_config_gpt2();
    c.vocab_size = qkv_tokenizer_vocab_size(tok);
    c.n_positions = 16, c.n_embd = 32, c.n_layer = 2, c.n_head = 2;
    c.embd_pdrop = c.attn_pdrop = c.resid_pdrop = 0;
    qkv_gpt *m1 = qkv_gpt_new(&c, 3), *m2 = qkv_gpt_new(&c, 3);
    qkv_train_opts o = tiny_opts("unused");
    o.batch_size = 4, o.grad_accum = 1;
    qkv_trainer *t1 = qkv_trainer_new(m1, d, &o);
    o.batch_size = 2, o.grad_accum = 2;
    qkv_trainer *t2 = qkv_trainer_new(m2, d, &o);
    qkv_train_stats a, b;
    double lerr = 0;
    for (int i = 0; i < 3; i++) {
        qkv_trainer_step(t1, &a);
        qkv_trainer_step(t2, &b);
        lerr = fmax(lerr, fabs((double)a.loss - b.loss) / a.loss);
    }
    qkv_params *p1 = qkv_gpt_params(m1), *p2 = qkv_gpt_params(m2);
    tu_close("grad_accum: params after 3 steps, B=2x2 vs B=4x1", qkv_params_data(p2), qkv_params_data(p1),
             qkv_params_numel(p1), ACCUM_TOL);
    TU_CHECK(lerr < 1e-5, "grad_accum: logged losses agree (rel %.2e)", lerr);
    qkv_trainer_free(t1);
    qkv_trainer_free(t2);
    qkv_gpt_free(m1);
    qkv_gpt_free(m2);
    qkv_dataset_free(d);
    qkv_tokenizer_free(tok);
}

/* ---- learning, epochs, fine-tuning, errors ---- */

static double last_loss(const char *dir) {
    char *log = log_without_speed(dir);
    double v = NAN;
    for (const char *q = log; q && (q = strstr(q, "\"loss\":")); q++) v = strtod(q + 7, NULL);
    free(log);
    return v;
}

static void test_learning_and_init(void) {
    char out[512], ft[512], bad[512], p[700];
    pth(out, sizeof out, "learn");
    qkv_train_opts o = tiny_opts(out);
    o.steps = 150;
    o.dropout = 0;
    o.grad_accum = 1;
    o.batch_size = 8;
    o.eval_every = 0;
    o.save_every = 0;
    o.lr = 1e-2f;
    o.warmup_steps = 10;
    TU_CHECK(run(&o, "learning run"), "learning run");
    size_t len;
    char *text = slurp(data_path, &len);
    qkv_tokenizer *tok = qkv_tokenizer_new_chars(text, len);
    free(text);
    double lnV = log((double)qkv_tokenizer_vocab_size(tok)), l = last_loss(out);
    TU_CHECK(l < 0.5 * lnV, "the loss falls: %.3f after 150 steps, ln V = %.3f", l, lnV);
    printf("%-4s learning: final loss %.3f after 150 steps (must be < ln V / 2 = %.3f)\n", l < 0.5 * lnV ? "ok" : "FAIL",
           l, 0.5 * lnV);

    /* --epochs: steps = ceil(E * train / (B T accum)) */
    char ep[512];
    pth(ep, sizeof ep, "epochs");
    o = tiny_opts(ep);
    o.epochs = 0.25;
    o.eval_every = 0;
    TU_CHECK(run(&o, "epochs run"), "epochs run");
    snprintf(p, sizeof p, "%s/tokens.bin", ep);
    int64_t n_tok = 0;
    /* the token count from the cache size: 56-byte header + 2 bytes per id */
    struct stat st;
    if (stat(p, &st) == 0) n_tok = ((int64_t)st.st_size - 56) / 2;
    int64_t n_train = n_tok - (int64_t)((double)n_tok * 0.1);
    int64_t want = (int64_t)ceil(0.25 * (double)n_train / (4 * 16 * 2));
    char *log = log_without_speed(ep);
    TU_CHECK(count_lines(log, "\"loss\"") == want, "--epochs 0.25: %d steps, want %lld", count_lines(log, "\"loss\""),
             (long long)want);
    free(log);

    /* fine-tune the trained model (--init): the tokenizer comes from the directory */
    pth(ft, sizeof ft, "finetune");
    o = tiny_opts(ft);
    o.tokenizer = NULL;
    o.init = out;
    o.steps = 3;
    o.lr = 0;
    o.dropout = -1;
    TU_CHECK(run(&o, "fine-tune"), "fine-tune from the trained model");
    snprintf(p, sizeof p, "%s/checkpoint-3", ft);
    qkv_train_state *s = qkv_train_state_load(p);
    TU_CHECK(s && qkv_train_state_opts(s)->lr == 5e-5f && qkv_train_state_opts(s)->dropout == 0.0f &&
             !strcmp(qkv_train_state_opts(s)->init, out), "fine-tune defaults: lr 5e-5, the model's dropout");
    qkv_train_state_free(s);

    /* --block-size beyond the init model's n_positions (16) */
    o.block_size = 17;
    o.overwrite = 1;
    qkv_status st2 = qkv_train_run(&o);
    TU_CHECK(st2 != QKV_OK && strstr(qkv_last_error(), "--block-size") && strstr(qkv_last_error(), "n_positions 16"),
             "--block-size 17 > n_positions: %s", qkv_last_error());
    /* an init directory whose tokenizer is larger than the model's vocabulary */
    pth(bad, sizeof bad, "badinit");
    mkdir(bad, 0777);
    char cmd[3200];
    snprintf(cmd, sizeof cmd, "cp '%s/config.json' '%s/model.safetensors' '%s/'", out, out, bad);
    TU_CHECK(system(cmd) == 0, "copy model");
    qkv_tokenizer *bytes = qkv_tokenizer_new_bytes();
    qkv_tokenizer_save_dir(bytes, bad);
    qkv_tokenizer_free(bytes);
    o = tiny_opts(ft);
    o.tokenizer = NULL;
    o.init = bad;
    o.overwrite = 1;
    st2 = qkv_train_run(&o);
    TU_CHECK(st2 != QKV_OK && strstr(qkv_last_error(), "--init") && strstr(qkv_last_error(), "256"),
             "tokenizer larger than the --init model: %s", qkv_last_error());
    /* a truncated model file */
    snprintf(p, sizeof p, "%s/model.safetensors", bad);
    snprintf(cmd, sizeof cmd, "cp '%s/vocab.json' '%s/'; rm -f '%s/merges.txt'; truncate -s 100 '%s'", out, bad, bad, p);
    TU_CHECK(system(cmd) == 0, "truncate model");
    st2 = qkv_train_run(&o);
    TU_CHECK(st2 != QKV_OK && strstr(qkv_last_error(), "--init") && strstr(qkv_last_error(), "model.safetensors"),
             "truncated --init model: %s", qkv_last_error());
    /* data shorter than one block: nothing is left behind in a new OUT */
    char tiny[512], tout[512];
    pth(tiny, sizeof tiny, "tiny.txt");
    FILE *f = fopen(tiny, "w");
    fputs("just a few words\n", f);
    fclose(f);
    const char *tl[1] = {tiny};
    o = tiny_opts(pth(tout, sizeof tout, "tinyout"));
    o.data = tl;
    st2 = qkv_train_run(&o);
    TU_CHECK(st2 != QKV_OK && strstr(qkv_last_error(), "fewer than one block") && access(tout, F_OK) != 0,
             "data shorter than a block, OUT not created: %s", qkv_last_error());
    /* bad options name their flag */
    o = tiny_opts(tout);
    o.n_embd = 30, o.n_head = 4;
    st2 = qkv_train_run(&o);
    TU_CHECK(st2 != QKV_OK && strstr(qkv_last_error(), "--n-embd"), "n_embd %% n_head: %s", qkv_last_error());
    o = tiny_opts(tout);
    o.lr = NAN;
    st2 = qkv_train_run(&o);
    TU_CHECK(st2 != QKV_OK && strstr(qkv_last_error(), "--lr"), "lr nan: %s", qkv_last_error());
    o = tiny_opts(tout);
    o.steps = 0;
    st2 = qkv_train_run(&o);
    TU_CHECK(st2 != QKV_OK && strstr(qkv_last_error(), "--steps"), "steps 0: %s", qkv_last_error());
    qkv_tokenizer_free(tok);
}

int main(void) {
    snprintf(root, sizeof root, "/tmp/qkv_test_trainer.XXXXXX");
    if (!mkdtemp(root)) {
        printf("FAIL: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    write_data();
    test_one_step();
    test_accum();
    test_resume();
    test_learning_and_init();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0) printf("note: could not remove %s\n", root);
    return tu_finish("test_trainer");
}
