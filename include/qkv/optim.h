/* qkv/optim.h — optimizers over a whole qkv_params block, gradient clipping, learning-rate schedules.
 *
 * Semantics are PyTorch's (torch.optim.SGD, torch.optim.AdamW, torch.nn.utils.clip_grad_norm_) and
 * Hugging Face's schedules (get_linear_schedule_with_warmup, get_cosine_schedule_with_warmup), so a
 * run here and a run there take the same steps. Optimizer state is blocks of the parameter layout.
 * Frozen parameters (requires_grad == 0) are skipped.
 */
#ifndef QKV_OPTIM_H
#define QKV_OPTIM_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* torch.optim.SGD(lr, momentum, dampening=0, weight_decay, nesterov=False):
 * g += wd * p; buf = momentum * buf + g (buf = g on the first step); p -= lr * buf. */
typedef struct qkv_sgd_opts {
    float momentum;
    float weight_decay;
} qkv_sgd_opts;

/* torch.optim.AdamW(lr, betas, eps, weight_decay): p *= 1 - lr * wd (parameters not marked no_decay);
 * m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps). */
typedef struct qkv_adamw_opts {
    float beta1, beta2, eps, weight_decay;
} qkv_adamw_opts;
/* beta1 0.9, beta2 0.999, eps 1e-8, weight_decay 0.01 (PyTorch's defaults). */
qkv_adamw_opts qkv_adamw_default_opts(void);

typedef struct qkv_optim qkv_optim;
/* The optimizer keeps a pointer to p (which must outlive it) and allocates its state blocks. NULL on
 * bad options or out of memory (qkv_last_error). */
qkv_optim *qkv_sgd_new(qkv_params *p, const qkv_sgd_opts *opts);
qkv_optim *qkv_adamw_new(qkv_params *p, const qkv_adamw_opts *opts);
void qkv_optim_free(qkv_optim *o);
/* One update with learning rate lr from the gradients in p's grad block (not zeroed here). */
qkv_status qkv_optim_step(qkv_optim *o, float lr);
int64_t qkv_optim_steps(const qkv_optim *o); /* updates taken so far */
/* State for checkpoints: n_blocks blocks of qkv_params_numel floats (AdamW: m, v; SGD: momentum). */
int qkv_optim_state_blocks(const qkv_optim *o);
float *qkv_optim_state(qkv_optim *o, int i);
void qkv_optim_set_steps(qkv_optim *o, int64_t steps);

/* torch.nn.utils.clip_grad_norm_(max_norm, norm_type=2): returns the total norm before clipping (over
 * trainable parameters); when it exceeds max_norm, scales every gradient by max_norm / (norm + 1e-6).
 * max_norm <= 0: only measures. A non-finite norm is returned as is and nothing is scaled. */
float qkv_clip_grad_norm(qkv_params *p, float max_norm);

typedef enum {
    QKV_SCHED_CONSTANT,         /* lr (after optional linear warmup) */
    QKV_SCHED_LINEAR,           /* HF get_linear_schedule_with_warmup: up to lr, then linearly to 0 */
    QKV_SCHED_COSINE,           /* HF get_cosine_schedule_with_warmup (half a cosine, num_cycles 0.5) */
} qkv_sched_kind;

typedef struct qkv_schedule {
    qkv_sched_kind kind;
    float lr;             /* peak learning rate */
    int64_t warmup_steps; /* linear from 0 */
    int64_t total_steps;  /* decay reaches 0 here (LINEAR, COSINE) */
} qkv_schedule;
/* Learning rate for the update with 0-based index step (HF LambdaLR convention: step 0 -> 0 when
 * warmup_steps > 0). */
float qkv_schedule_lr(const qkv_schedule *s, int64_t step);

#ifdef __cplusplus
}
#endif
#endif
