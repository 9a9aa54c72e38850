/* schedule.c — learning-rate schedules: the Hugging Face LambdaLR multipliers times the peak lr.
 *
 *   CONSTANT  get_constant_schedule_with_warmup   step < W: step / max(1, W); else 1
 *   LINEAR    get_linear_schedule_with_warmup     step < W: step / max(1, W);
 *                                                 else max(0, (N - step) / max(1, N - W))
 *   COSINE    get_cosine_schedule_with_warmup     step < W: step / max(1, W);
 *             (num_cycles 0.5)                    else max(0, 0.5 (1 + cos(pi * 2 * 0.5 * progress))),
 *                                                 progress = (step - W) / max(1, N - W)
 * with W = warmup_steps, N = total_steps and step the 0-based index of the update. The max(1, .)
 * guards are Hugging Face's own, so W = 0 or N <= W never divide by zero.
 *
 * Deliberately not Hugging Face: past total_steps the cosine stays at 0 (progress is capped at 1),
 * where HF's formula would climb back up the next half cosine; the header promises decay reaches 0
 * at total_steps. Everything up to total_steps is identical.
 *
 * The multiplier is computed in double, as Python does, and rounded to float once at the end.
 * A bad schedule (NULL, negative step or step counts, non-finite or negative lr, unknown kind) gives
 * NaN and sets qkv_last_error; qkv_optim_step then refuses that lr, so a bad schedule cannot train.
 * Not here: the optimizers (optim.c).
 */
#include <math.h>

#include "core/core_int.h"
#include "qkv/optim.h"

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

static double max1(int64_t x) { return x > 1 ? (double)x : 1.0; }

float qkv_schedule_lr(const qkv_schedule *s, int64_t step) {
    if (!s) {
        qkv__set_error(QKV_ERR_ARG, "qkv_schedule_lr: NULL schedule");
        return NAN;
    }
    if (!(isfinite(s->lr) && s->lr >= 0.0f)) {
        qkv__set_error(QKV_ERR_ARG, "qkv_schedule_lr: lr must be finite and >= 0, got %g", (double)s->lr);
        return NAN;
    }
    if (s->warmup_steps < 0 || s->total_steps < 0 || step < 0) {
        qkv__set_error(QKV_ERR_ARG, "qkv_schedule_lr: step (%lld), warmup_steps (%lld) and total_steps (%lld) must be >= 0",
                       (long long)step, (long long)s->warmup_steps, (long long)s->total_steps);
        return NAN;
    }
    int64_t w = s->warmup_steps, n = s->total_steps;
    double f;
    if (step < w) {
        f = (double)step / max1(w);
    } else {
        switch (s->kind) {
        case QKV_SCHED_CONSTANT: f = 1.0; break;
        case QKV_SCHED_LINEAR: f = fmax(0.0, (double)(n - step) / max1(n - w)); break;
        case QKV_SCHED_COSINE: {
            double progress = fmin(1.0, (double)(step - w) / max1(n - w));
            f = fmax(0.0, 0.5 * (1.0 + cos(M_PI * 2.0 * 0.5 * progress)));
            break;
        }
        default:
            qkv__set_error(QKV_ERR_ARG, "qkv_schedule_lr: unknown schedule kind %d", (int)s->kind);
            return NAN;
        }
    }
    return (float)((double)s->lr * f);
}
