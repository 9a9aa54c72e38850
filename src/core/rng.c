/* rng.c — xoshiro256** seeded through splitmix64: small, fast, and the same stream on every machine.
 * Not cryptographic. Normal deviates use Box–Muller on two uniforms (no cached second value, so the
 * stream position depends only on how many deviates were drawn). */
#include <math.h>

#include "core_int.h"

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void qkv_rng_seed(qkv_rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t qkv_rng_u64(qkv_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float qkv_rng_uniform(qkv_rng *r) { return (float)(qkv_rng_u64(r) >> 40) * (1.0f / 16777216.0f); }

void qkv__rng_box_muller(qkv_rng *r, double *radius, double *angle) {
    /* u1 in (0,1] so the log is finite. */
    double u1 = ((double)(qkv_rng_u64(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(qkv_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    *radius = sqrt(-2.0 * log(u1));
    *angle = 6.283185307179586 * u2;
}

float qkv_rng_normal(qkv_rng *r) {
    double rad, th;
    qkv__rng_box_muller(r, &rad, &th);
    return (float)(rad * cos(th));
}
