/* test_torch_sampling.c — the sampler's filtered distribution against PyTorch re-implementations of
 * Hugging Face's TemperatureLogitsWarper -> TopKLogitsWarper -> TopPLogitsWarper + softmax
 * (tests/torch/gen_sampling.py writes sampling.bin). For each case: the same ids kept, and the
 * probabilities equal within 2e-6 (torch computes in float32, qkv in double; each case is generated
 * away from every keep/remove boundary so rounding cannot flip a decision).
 */
#include "qkv/infer.h"
#include "testutil.h"

int main(void) {
    tu_golden *g = tu_golden_load("sampling.bin");
    int n = tu_i32(g, "n_cases")[0];
    double worst = 0;
    for (int c = 0; c < n; c++) {
        char name[64];
        snprintf(name, sizeof name, "case%d_logits", c);
        tu_entry *e = tu_get(g, name);
        const float *logits = e->data;
        int64_t V = e->numel;
        snprintf(name, sizeof name, "case%d_opts", c);
        const float *op = tu_f32(g, name);
        snprintf(name, sizeof name, "case%d_probs", c);
        const float *ref = tu_f32(g, name);
        qkv_sample_opts o = qkv_sample_default_opts();
        o.temperature = op[0], o.top_k = (int64_t)op[1], o.top_p = op[2];
        qkv_sampler *s = qkv_sampler_new(V, &o, 0);
        float *got = malloc((size_t)V * sizeof *got);
        TU_CHECK(s && qkv_sampler_probs(s, logits, got) == QKV_OK, "case %d: %s", c, qkv_last_error());
        int kept = 0, kept_ref = 0, same = 1;
        double err = 0;
        for (int64_t i = 0; i < V; i++) {
            kept += got[i] > 0, kept_ref += ref[i] > 0;
            same &= (got[i] > 0) == (ref[i] > 0);
            err = fmax(err, fabs((double)got[i] - ref[i]));
        }
        worst = fmax(worst, err);
        TU_CHECK(same, "case %d: kept ids differ (%d vs torch %d)", c, kept, kept_ref);
        TU_CHECK(err <= 2e-6, "case %d: max |p - torch| %.3e > 2e-6", c, err);
        printf("%-4s case %2d V=%-5lld T=%.2f top_k=%-3lld top_p=%.2f: %4d ids kept (torch %4d), max|p-torch| %.2e "
               "(tol 2e-06)\n",
               same && err <= 2e-6 ? "ok" : "FAIL", c, (long long)V, (double)o.temperature, (long long)o.top_k,
               (double)o.top_p, kept, kept_ref, err);
        qkv_sampler_free(s);
        free(got);
    }
    printf("worst max|p-torch| over %d cases: %.2e\n", n, worst);
    tu_golden_free(g);
    return tu_finish("test_torch_sampling");
}
