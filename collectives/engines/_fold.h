/* Folds for the engines' C parts (_small_c.c, _reads_c.c): ``out = left op right`` element by element,
   in the arithmetic numpy's ufuncs use for the dtypes and operators listed (floats SUM and PROD in their
   own precision, integers wrapping), so that the C plans give the bits of the Python plans' folds. */

#ifndef COLLECTIVES_FOLD_H
#define COLLECTIVES_FOLD_H

#include <Python.h>
#include <stdint.h>
#include <string.h>

enum { OP_NONE = -1, OP_SUM = 0, OP_PROD = 1, OP_MIN = 2, OP_MAX = 3, OP_BAND = 4, OP_BOR = 5, OP_BXOR = 6 };
enum { T_F32, T_F64, T_I8, T_I16, T_I32, T_I64, T_U8, T_U16, T_U32, T_U64, T_COUNT };

/* -- reductions: out = left op right, element by element (each element read before it is
   written, so left may be out itself) ------------------------------------------------ */
#define FOLD3_LOOP(T, EXPR)                                                       \
    {                                                                             \
        T *o = (T *)out;                                                          \
        const T *l = (const T *)left, *r = (const T *)right;                      \
        for (Py_ssize_t i = 0; i < n; i++) { T a = l[i], b = r[i]; o[i] = (EXPR); } \
    }

/* The ops every dtype folds: floats in their own arithmetic (U = T), integers wrapping as
   numpy's do (unsigned arithmetic U, then T's view of the bits). */
#define FOLD3_SUM_PROD(T, U)                                                     \
    case OP_SUM: FOLD3_LOOP(T, (T)((U)a + (U)b)) break;                          \
    case OP_PROD: FOLD3_LOOP(T, (T)((U)a * (U)b)) break;

#define FOLD3_ARITH(T)                                                           \
    switch (op) {                                                                \
    FOLD3_SUM_PROD(T, T)                                                         \
    default: return 0;                                                           \
    }

#define FOLD3_INT(T, U)                                                          \
    switch (op) {                                                                \
    FOLD3_SUM_PROD(T, U)                                                         \
    case OP_MIN: FOLD3_LOOP(T, a < b ? a : b) break;                             \
    case OP_MAX: FOLD3_LOOP(T, a > b ? a : b) break;                             \
    case OP_BAND: FOLD3_LOOP(T, a & b) break;                                    \
    case OP_BOR: FOLD3_LOOP(T, a | b) break;                                     \
    case OP_BXOR: FOLD3_LOOP(T, a ^ b) break;                                    \
    default: return 0;                                                           \
    }

static int fold3(int dtype, int op, char *out, const char *left, const char *right, Py_ssize_t nbytes) {
    Py_ssize_t n;
    switch (dtype) {
    case T_F32: n = nbytes / 4; FOLD3_ARITH(float) break;
    case T_F64: n = nbytes / 8; FOLD3_ARITH(double) break;
    case T_I8: n = nbytes; FOLD3_INT(int8_t, uint8_t) break;
    case T_I16: n = nbytes / 2; FOLD3_INT(int16_t, uint16_t) break;
    case T_I32: n = nbytes / 4; FOLD3_INT(int32_t, uint32_t) break;
    case T_I64: n = nbytes / 8; FOLD3_INT(int64_t, uint64_t) break;
    case T_U8: n = nbytes; FOLD3_INT(uint8_t, uint8_t) break;
    case T_U16: n = nbytes / 2; FOLD3_INT(uint16_t, uint16_t) break;
    case T_U32: n = nbytes / 4; FOLD3_INT(uint32_t, uint32_t) break;
    case T_U64: n = nbytes / 8; FOLD3_INT(uint64_t, uint64_t) break;
    default: return 0;
    }
    return 1;
}

/* out = out op src: the folds after a call's first. */
static int fold(int dtype, int op, char *out, const char *src, Py_ssize_t nbytes) {
    return fold3(dtype, op, out, out, src, nbytes);
}

static const int ITEM_SIZE[T_COUNT] = {4, 8, 1, 2, 4, 8, 1, 2, 4, 8};

/* Whether fold3 folds (dtype, op): asked of fold3 itself, over no elements, so that what a plan
   is let take and what it can fold never disagree. */
static int folds(int dtype, int op) {
    return fold3(dtype, op, NULL, NULL, NULL, 0);
}

#endif
