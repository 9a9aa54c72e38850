/* mem.c — large blocks (parameter blocks, arena chunks) as anonymous mappings advised for huge pages.
 *
 * Why: a first training step touches every page of the arena and of the gradient block; in a virtual
 * machine each 4 KiB page fault is expensive (GPT-2 124M: 5.6 s for the first step, 11 s of system
 * time in a four-step run), and transparent huge pages make the faults 512 times fewer. Mappings also
 * come back zeroed and untouched pages cost nothing, which the parameter block relies on.
 * Not here: the arena's bump allocation (context.c), parameter layout (params.c).
 */
#include <stdlib.h>
#include <sys/mman.h>

#include "core_int.h"

void *qkv__big_alloc(size_t bytes) {
    if (bytes < QKV__BIG_MIN_BYTES) return aligned_alloc(64, (bytes + 63) / 64 * 64);
    void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return NULL;
#ifdef MADV_HUGEPAGE
    (void)madvise(m, bytes, MADV_HUGEPAGE); /* advice only: without THP the mapping works as is */
#endif
    return m;
}

void qkv__big_free(void *p, size_t bytes) {
    if (!p) return;
    if (bytes >= QKV__BIG_MIN_BYTES) munmap(p, bytes);
    else free(p);
}
