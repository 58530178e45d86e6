/*  grow.h - the one growable-array helper: make room for one more element
    by doubling, keeping the array intact when memory runs out.

        if (fp_grow(&self->items, &self->cap, self->n + 1, sizeof *self->items, 64) != 0)
            return -ENOMEM;          // self->items and self->cap unchanged
        self->items[self->n++] = x;

    The element type is erased (pp is a T **), so the compiler cannot check
    that size matches *pp's element: write `sizeof *array` as above. Any
    thread, for arrays that thread owns.
*/
#ifndef FP_GROW_H
#define FP_GROW_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Ensures *cap >= need, growing *pp (an array of *cap elements of size
   bytes) to max(first, 2 * *cap, need) elements with realloc. 0, or
   -ENOMEM with *pp and *cap unchanged. New elements are uninitialised. */
static inline int fp_grow(void *pp, size_t *cap, size_t need, size_t size, size_t first)
{
    if (need <= *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : first;
    if (ncap < need)
        ncap = need;
    if (ncap > SIZE_MAX / size)
        return -ENOMEM;
    void *p; /* *pp through memcpy: pp points at a T *, not a void * */
    memcpy(&p, pp, sizeof p);
    void *n = realloc(p, ncap * size);
    if (!n)
        return -ENOMEM;
    memcpy(pp, &n, sizeof n);
    *cap = ncap;
    return 0;
}

#endif
