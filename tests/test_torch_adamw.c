/* test_torch_adamw.c — optimizer parity with PyTorch on a small model (golden: tests/torch/gen_adamw.py).
 *
 * The model is x (8,6) -> Linear(6,16) -> GELU (exact) -> Linear(16,5) -> cross_entropy (one target
 * ignored), rebuilt from qkv ops over a qkv_params block with PyTorch's state-dict names. Two runs from
 * the same initial weights, each step = zero_grad, forward, backward, clip_grad_norm, schedule, step:
 *   adamw: 10 steps of AdamW (lr 1e-2, wd 0.1, biases no_decay) with the linear warmup(3)/decay(10)
 *          schedule, so the lr changes every step (step 0 has lr 0);
 *   sgd:   5 steps of SGD (lr 0.05, momentum 0.9, wd 0.01).
 * Both clip at max_norm 0.95 (from the golden), which scales the early steps and not the later ones.
 * After every step it compares the loss and the gradient norm before clipping (forward/backward at the
 * weights before the step), the lr, and every parameter after the step.
 *
 * Tolerances (normalised max error, tu_close):
 *   FWD_TOL 1e-4    loss and gradient norm: float32 GEMMs summed in another order than PyTorch's.
 *   LR_TOL 1e-6     the schedule is the same double formula rounded to float once.
 *   PARAM_TOL 1e-4  parameters: the update repeats PyTorch's float operations one for one (to the last
 *                   bit, or one ulp where PyTorch's vector add fuses a multiply-add), so what is left is the gradients' float32 GEMM-order error
 *                   carried through up to 10 steps. Adam's m / sqrt(v) does not amplify a small relative
 *                   gradient error (except for an element whose gradient sits at rounding noise, where
 *                   the sign can flip: that is the margin kept), and lr-sized updates on weights of
 *                   order 0.4 shrink it further; measured: ~2e-7.
 */
/* testutil.h: helpers this test does not use, and a "/\*" inside its opening comment */
#include "testutil.h"

#define FWD_TOL 1e-4
#define LR_TOL 1e-6
#define PARAM_TOL 1e-4

#define B 8
#define IN 6
#define HID 16
#define OUT 5

static const char *const names[4] = {"0.weight", "0.bias", "2.weight", "2.bias"};

typedef struct {
    double loss, norm, param; /* largest error of each kind over the run */
} worst;

static void run(tu_golden *g, const char *prefix, int steps, int adamw, worst *w) {
    qkv_params *p = qkv_params_new();
    qkv_tensor *t[4];
    t[0] = qkv_params_add(p, names[0], 2, (int64_t[]){HID, IN}, (qkv_init){QKV_INIT_ZEROS, 0}, 0);
    t[1] = qkv_params_add(p, names[1], 1, (int64_t[]){HID}, (qkv_init){QKV_INIT_ZEROS, 0}, 1);
    t[2] = qkv_params_add(p, names[2], 2, (int64_t[]){OUT, HID}, (qkv_init){QKV_INIT_ZEROS, 0}, 0);
    t[3] = qkv_params_add(p, names[3], 1, (int64_t[]){OUT}, (qkv_init){QKV_INIT_ZEROS, 0}, 1);
    if (!t[0] || !t[1] || !t[2] || !t[3] || qkv_params_alloc(p, 0) != QKV_OK) {
        printf("FAIL: cannot build the parameter block: %s\n", qkv_last_error());
        exit(1);
    }
    char key[128];
    for (int i = 0; i < 4; i++) {
        snprintf(key, sizeof key, "init.%s", names[i]);
        tu_load_param(g, key, t[i]);
    }
    const float *x = tu_f32(g, "x");
    const int32_t *targets = tu_i32(g, "targets");
    float max_norm = tu_f32(g, "max_norm")[0];

    qkv_optim *opt;
    qkv_schedule sched;
    if (adamw) {
        qkv_adamw_opts o = qkv_adamw_default_opts();
        o.weight_decay = 0.1f;
        opt = qkv_adamw_new(p, &o);
        sched = (qkv_schedule){QKV_SCHED_LINEAR, 1e-2f, 3, 10};
    } else {
        opt = qkv_sgd_new(p, &(qkv_sgd_opts){.momentum = 0.9f, .weight_decay = 0.01f});
        sched = (qkv_schedule){QKV_SCHED_CONSTANT, 0.05f, 0, 0};
    }
    qkv_ctx *ctx = qkv_ctx_new(0);
    if (!opt || !ctx) {
        printf("FAIL: cannot make the optimizer/context: %s\n", qkv_last_error());
        exit(1);
    }

    for (int s = 0; s < steps; s++) {
        qkv_params_zero_grad(p);
        qkv_tensor *xt = qkv_tensor_from(ctx, 2, (int64_t[]){B, IN}, x);
        qkv_tensor *h = qkv_linear(ctx, xt, t[0], t[1]);             /* model[0](x) */
        qkv_tensor *a = qkv_gelu(ctx, h, 0);                          /* model[1]: nn.GELU() */
        qkv_tensor *logits = qkv_linear(ctx, a, t[2], t[3]);         /* model[2](a) */
        qkv_tensor *loss = qkv_cross_entropy(ctx, logits, targets, -100);
        if (!loss || qkv_backward(ctx, loss) != QKV_OK) {
            printf("FAIL: %s step %d forward/backward: %s\n", prefix, s, qkv_ctx_error(ctx));
            exit(1);
        }
        float norm = qkv_clip_grad_norm(p, max_norm);              /* clip_grad_norm_(params, max_norm) */
        float lr = qkv_schedule_lr(&sched, s);                      /* LambdaLR: lr for update s */
        if (qkv_optim_step(opt, lr) != QKV_OK) {
            printf("FAIL: %s step %d: %s\n", prefix, s, qkv_last_error());
            exit(1);
        }

        char what[96];
        double step_param = 0, step_loss, step_norm;
        snprintf(key, sizeof key, "%s.step%d.loss", prefix, s);
        snprintf(what, sizeof what, "%s step %d loss", prefix, s);
        double e = step_loss = tu_close(what, loss->data, tu_f32(g, key), 1, FWD_TOL);
        if (e > w->loss) w->loss = e;
        snprintf(key, sizeof key, "%s.step%d.grad_norm", prefix, s);
        float ref_norm = tu_f32(g, key)[0];
        snprintf(what, sizeof what, "%s step %d grad norm (%s)", prefix, s, ref_norm > max_norm ? "clipped" : "not clipped");
        e = step_norm = tu_close(what, &norm, &ref_norm, 1, FWD_TOL);
        if (e > w->norm) w->norm = e;
        snprintf(key, sizeof key, "%s.step%d.lr", prefix, s);
        snprintf(what, sizeof what, "%s step %d lr", prefix, s);
        tu_close(what, &lr, tu_f32(g, key), 1, LR_TOL);
        for (int i = 0; i < 4; i++) {
            snprintf(key, sizeof key, "%s.step%d.%s", prefix, s, names[i]);
            snprintf(what, sizeof what, "%s step %d %s after the step", prefix, s, names[i]);
            e = tu_close(what, t[i]->data, tu_f32(g, key), qkv_tensor_numel(t[i]), PARAM_TOL);
            if (e > w->param) w->param = e;
            if (e > step_param) step_param = e;
        }
        printf("---- %s step %d (lr %.6g, norm %.6f%s): largest errors loss %.2e grad norm %.2e params %.2e\n", prefix,
               s, lr, norm, ref_norm > max_norm ? " clipped" : "", step_loss, step_norm, step_param);
        qkv_ctx_reset(ctx);
    }
    TU_CHECK(qkv_optim_steps(opt) == steps, "%s: %lld steps counted", prefix, (long long)qkv_optim_steps(opt));
    qkv_ctx_free(ctx);
    qkv_optim_free(opt);
    qkv_params_free(p);
}

int main(void) {
    tu_golden *g = tu_golden_load("adamw.bin");
    worst wa = {0, 0, 0}, ws = {0, 0, 0};
    run(g, "adamw", 10, 1, &wa);
    run(g, "sgd", 5, 0, &ws);
    printf("largest errors: adamw loss %.3e grad norm %.3e params %.3e; sgd loss %.3e grad norm %.3e params %.3e\n",
           wa.loss, wa.norm, wa.param, ws.loss, ws.norm, ws.param);
    tu_golden_free(g);
    return tu_finish("test_torch_adamw");
}
