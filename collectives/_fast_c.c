/* The communicator's fast path in C: the checks of collectives/_fast_path.py, same order,
   same answers, for plain numpy arrays.

   A repeated small call spends most of its Python fast path on the checks themselves (each
   ``x.flags`` makes an object, each key a tuple of attribute reads, about 0.6 us of a 0.8 us
   zero-element call). Here they read the array's header directly; what is not a plain
   ndarray goes to the Python fast path (``setup``'s fallbacks: torch tensors), and what the
   checks refuse returns None/False, so that the call takes the full path, which says what
   is wrong. The kept plan itself runs through the communicator's ``KeptRun`` (below): the
   bookkeeping of ``Communicator._run_kept`` (its lock, sequence number, deadline and flight
   recorder slot), the same steps in the same order, without the interpreter's frame, or
   through ``comm._run_kept`` where its ``_kept_run`` is None. Each function takes the requested
   algorithm as an optional last argument: a call that names one finds its own kept plan.

   The array header is numpy's PyArrayObject_fields, whose leading fields have kept their
   layout since numpy 1.7 (2.x included); _fast_path.py checks this reading against numpy's
   own at import (``header``) and uses the Python fast path where they differ. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_kept_run.h"

typedef struct { /* the leading fields of numpy's PyArrayObject_fields */
    PyObject_HEAD
    char *data;
    int nd;
    Py_ssize_t *dimensions;
    Py_ssize_t *strides;
    PyObject *base;
    PyObject *descr;
    int flags;
} ArrayHead;

enum { C_CONTIGUOUS = 0x0001, WRITEABLE = 0x0400 }; /* NPY_ARRAY_C_CONTIGUOUS, NPY_ARRAY_WRITEABLE */
enum { ALL_REDUCE, REDUCE_SCATTER, ALL_GATHER, BROADCAST, REDUCE, ALL_TO_ALL, GATHER, SCATTER, KINDS };

static PyTypeObject *ndarray;      /* numpy.ndarray, from setup() */
static PyObject *fallback[KINDS];  /* the Python fast path, for inputs that are not ndarrays */
static PyObject *names[KINDS];     /* "all_reduce", ...: the first item of each plan key */
static PyObject *s_plans, *s_run_kept, *s_reshape, *s_itemsize, *s_size, *s_rank, *s_folds_into_out, *minus_one;

static inline ArrayHead *array_of(PyObject *o) {
    return ndarray != NULL && Py_TYPE(o) == ndarray ? (ArrayHead *)o : NULL;
}

static Py_ssize_t count_of(const ArrayHead *a) {
    Py_ssize_t n = 1;
    for (int i = 0; i < a->nd; i++) n *= a->dimensions[i];
    return n;
}

/* ``a`` as one dimension (a new reference): itself, or ``a.reshape(-1)``, a view of a
   C-contiguous array. */
static PyObject *flat(ArrayHead *a) {
    if (a->nd == 1) {
        Py_INCREF(a);
        return (PyObject *)a;
    }
    return PyObject_CallMethodOneArg((PyObject *)a, s_reshape, minus_one);
}

/* The kept plan under ``key`` (borrowed), or NULL: with an error set on a real failure, with
   none where there is no plan, or the key does not hash (an unhashable op: the full path
   names it). */
static PyObject *kept(PyObject *comm, PyObject *key) {
    PyObject *plans = PyObject_GetAttr(comm, s_plans);
    if (plans == NULL) return NULL;
    PyObject *plan = NULL;
    if (PyDict_CheckExact(plans)) {
        plan = PyDict_GetItemWithError(plans, key);
        if (plan == NULL && PyErr_ExceptionMatches(PyExc_TypeError)) PyErr_Clear();
    }
    Py_DECREF(plans);
    return plan;
}

/* The algorithm a call asked for: its last argument where it passed ``arity + 1`` (the
   communicator does), else None (the automatic choice). */
static inline PyObject *algorithm_of(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t arity) {
    return nargs > arity ? args[arity] : Py_None;
}

/* The plan key (the Python path's): the collective, dtype, count, ``third`` where
   ``with_third`` (an operator or root), then the requested ``algorithm``. */
static PyObject *key_of(int kind, const ArrayHead *x, Py_ssize_t n, PyObject *third, int with_third,
                        PyObject *algorithm) {
    PyObject *count = PyLong_FromSsize_t(n);
    if (count == NULL) return NULL;
    PyObject *key = with_third ? PyTuple_Pack(5, names[kind], x->descr, count, third, algorithm)
                               : PyTuple_Pack(4, names[kind], x->descr, count, algorithm);
    Py_DECREF(count);
    return key;
}

/* comm._run_kept(key, plan, flat x or None, flat out or None; ``in_place``: the one flat x
   twice, as the Python path passes it): 0, or -1 with its error set. */
static int run_kept(PyObject *comm, PyObject *key, PyObject *plan, ArrayHead *x, ArrayHead *out, int in_place) {
    PyObject *fx = x != NULL ? flat(x) : (Py_INCREF(Py_None), Py_None), *fo = NULL;
    if (fx == NULL) return -1;
    if (in_place) {
        fo = fx;
        Py_INCREF(fo);
    } else if (out != NULL) {
        fo = flat(out);
        if (fo == NULL) {
            Py_DECREF(fx);
            return -1;
        }
    } else {
        fo = Py_None;
        Py_INCREF(fo);
    }
    int rc = -1;
    PyObject *runner = PyObject_GetAttr(comm, s_kept_run);  /* (_kept_run.h; None: the Python steps) */
    if (runner != NULL && Py_TYPE(runner) == &KeptRunType) {
        rc = kept_run((KeptRun *)runner, comm, key, plan, fx, fo);
    } else if (runner != NULL) {
        PyObject *args[5] = {comm, key, plan, fx, fo};
        PyObject *r = PyObject_VectorcallMethod(s_run_kept, args, 5 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        rc = r == NULL ? -1 : 0;
        Py_XDECREF(r);
    }
    Py_XDECREF(runner);
    Py_DECREF(fx);
    Py_DECREF(fo);
    return rc;
}

/* _fast_path._output_ok: one dtype, ``out`` of ``count`` elements, both C-contiguous, ``out``
   writable. 1, 0, or -1 with an error set. */
static int output_ok(const ArrayHead *x, const ArrayHead *out, Py_ssize_t count) {
    if (out->descr != x->descr) {
        int same = PyObject_RichCompareBool(out->descr, x->descr, Py_EQ);
        if (same <= 0) return same;
    }
    return count_of(out) == count && (x->flags & C_CONTIGUOUS) && (out->flags & C_CONTIGUOUS) &&
           (out->flags & WRITEABLE);
}

/* Whether C-contiguous ``x`` and ``out`` of one dtype and ``count`` elements are the same
   memory or apart (_fast_path: ``apart`` or ``same_or_apart``). 1, 0, or -1 with an error;
   where apart, ``*nbytes`` is their size in bytes. */
static int same_or_apart(const ArrayHead *x, const ArrayHead *out, Py_ssize_t count, Py_ssize_t *nbytes) {
    if (x->data == out->data || count == 0) return 1;
    PyObject *item = PyObject_GetAttr(x->descr, s_itemsize);
    if (item == NULL) return -1;
    Py_ssize_t size = PyLong_AsSsize_t(item);
    Py_DECREF(item);
    if (size < 0 && PyErr_Occurred()) return -1;
    *nbytes = count * size;
    return x->data + *nbytes <= out->data || out->data + *nbytes <= x->data;
}

/* all_reduce(comm, x, op, out[, algorithm]): the result of a kept all-reduce, or None. */
static PyObject *all_reduce(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 4 && nargs != 5) return PyErr_Format(PyExc_TypeError, "all_reduce(comm, x, op, out[, algorithm])");
    PyObject *comm = args[0], *x = args[1], *op = args[2], *out = args[3];
    ArrayHead *xa = array_of(x), *oa = NULL;
    if (xa == NULL) return PyObject_Vectorcall(fallback[ALL_REDUCE], args, (size_t)nargs, NULL);
    if (out != Py_None && (oa = array_of(out)) == NULL) Py_RETURN_NONE;
    Py_ssize_t count = count_of(xa);
    PyObject *key = key_of(ALL_REDUCE, xa, count, op, 1, algorithm_of(args, nargs, 4));
    if (key == NULL) return NULL;
    PyObject *plan = kept(comm, key), *result = Py_None;
    if (plan == NULL) {
        Py_DECREF(key);
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    Py_INCREF(plan);
    if (oa == NULL) {
        if ((xa->flags & (C_CONTIGUOUS | WRITEABLE)) == (C_CONTIGUOUS | WRITEABLE))
            result = run_kept(comm, key, plan, xa, NULL, 1) < 0 ? NULL : x;
    } else if (xa->flags & C_CONTIGUOUS) {
        Py_ssize_t nbytes = 0;
        int ok = output_ok(xa, oa, count);
        if (ok > 0) ok = same_or_apart(xa, oa, count, &nbytes);
        if (ok < 0) result = NULL;
        else if (ok > 0) result = run_kept(comm, key, plan, xa, oa, 0) < 0 ? NULL : out;
    }
    Py_DECREF(plan);
    Py_DECREF(key);
    Py_XINCREF(result);
    return result;
}

/* reduce_scatter(comm, x, out, op), all_gather(comm, x, out) and all_to_all(comm, x, out), each
   with the requested algorithm after them where given (``arity``: the arguments before it):
   whether the kept plan ran. */
static PyObject *into_out(int kind, PyObject *const *args, Py_ssize_t nargs, Py_ssize_t arity) {
    PyObject *comm = args[0], *x = args[1], *out = args[2], *op = kind == REDUCE_SCATTER ? args[3] : NULL;
    ArrayHead *xa = array_of(x), *oa;
    if (xa == NULL) return PyObject_Vectorcall(fallback[kind], args, (size_t)nargs, NULL);
    if ((oa = array_of(out)) == NULL) Py_RETURN_FALSE;
    Py_ssize_t count = count_of(xa);
    PyObject *key = key_of(kind, xa, count, op, kind == REDUCE_SCATTER, algorithm_of(args, nargs, arity));
    if (key == NULL) return NULL;
    PyObject *plan = kept(comm, key);
    int ran = 0;
    if (plan != NULL) {
        Py_INCREF(plan);
        PyObject *size = PyObject_GetAttr(comm, s_size);  /* out holds count / size or count * size */
        Py_ssize_t n = size == NULL ? -1 : PyLong_AsSsize_t(size);
        Py_XDECREF(size);
        if (n <= 0) {
            ran = -1;
        } else {
            ran = output_ok(xa, oa, kind == REDUCE_SCATTER ? count / n : kind == ALL_GATHER ? count * n : count);
            if (ran > 0) ran = run_kept(comm, key, plan, xa, oa, 0) < 0 ? -1 : 1;
        }
        Py_DECREF(plan);
    }
    Py_DECREF(key);
    if (ran < 0 || PyErr_Occurred()) return NULL;
    return PyBool_FromLong(ran);
}

static PyObject *reduce_scatter(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 4 && nargs != 5) return PyErr_Format(PyExc_TypeError, "reduce_scatter(comm, x, out, op[, algorithm])");
    return into_out(REDUCE_SCATTER, args, nargs, 4);
}

static PyObject *all_gather(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3 && nargs != 4) return PyErr_Format(PyExc_TypeError, "all_gather(comm, x, out[, algorithm])");
    return into_out(ALL_GATHER, args, nargs, 3);
}

static PyObject *all_to_all(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3 && nargs != 4) return PyErr_Format(PyExc_TypeError, "all_to_all(comm, x, out[, algorithm])");
    return into_out(ALL_TO_ALL, args, nargs, 3);
}

/* Whether this rank is ``root``: 1, 0, or -1 with an error set. */
static int is_root(PyObject *comm, PyObject *root) {
    PyObject *rank = PyObject_GetAttr(comm, s_rank);
    int same = rank == NULL ? -1 : PyObject_RichCompareBool(rank, root, Py_EQ);
    Py_XDECREF(rank);
    return same;
}

/* The kept in-place plan run on ``out`` (checked as ``x``: one dtype and count, the same memory
   or apart), filled from ``x`` first where this rank is ``fill_root`` (NULL: always, a reduce's
   root); or, where the plan ``folds_into_out`` and ``out`` is apart from ``x``, run on ``x`` into
   ``out`` (``x`` only read, nothing copied first). 1 ran, 0 refused, -1 with an error set. */
static int run_on_filled_out(PyObject *comm, PyObject *key, PyObject *plan, ArrayHead *xa, ArrayHead *oa,
                             Py_ssize_t count, PyObject *fill_root, int folds_into_out) {
    Py_ssize_t nbytes = 0;
    int ok = output_ok(xa, oa, count);
    if (ok > 0) ok = same_or_apart(xa, oa, count, &nbytes);
    if (ok <= 0) return ok;
    if (xa->data != oa->data) {
        if (folds_into_out) return run_kept(comm, key, plan, xa, oa, 0) < 0 ? -1 : 1;
        int fill = fill_root == NULL ? 1 : is_root(comm, fill_root);
        if (fill < 0) return -1;
        if (fill) memcpy(oa->data, xa->data, (size_t)nbytes);
    }
    return run_kept(comm, key, plan, oa, NULL, 0) < 0 ? -1 : 1;
}

/* Whether a kept reduce plan folds into the root's ``out`` straight (its ``folds_into_out``,
   windowed.LargeReduce): 1, 0, or -1 with an error set. */
static int folds_into_out(PyObject *plan) {
    PyObject *folds = NULL;
    int rc = _PyObject_LookupAttr(plan, s_folds_into_out, &folds);
    if (rc > 0) {
        rc = PyObject_IsTrue(folds);
        Py_DECREF(folds);
    }
    return rc;
}

/* broadcast(comm, x, root, out[, algorithm]): whether the kept broadcast ran on ``x`` (or into ``out``,
   filled from ``x`` on the root first). */
static PyObject *broadcast(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 4 && nargs != 5) return PyErr_Format(PyExc_TypeError, "broadcast(comm, x, root, out[, algorithm])");
    PyObject *comm = args[0], *x = args[1], *root = args[2], *out = args[3];
    ArrayHead *xa = array_of(x), *oa = NULL;
    if (xa == NULL) return PyObject_Vectorcall(fallback[BROADCAST], args, (size_t)nargs, NULL);
    if (!PyLong_CheckExact(root) || (out != Py_None && (oa = array_of(out)) == NULL)) Py_RETURN_FALSE;
    Py_ssize_t count = count_of(xa);
    PyObject *key = key_of(BROADCAST, xa, count, root, 1, algorithm_of(args, nargs, 4));
    if (key == NULL) return NULL;
    PyObject *plan = kept(comm, key);
    int ran = 0;
    if (plan != NULL && (xa->flags & C_CONTIGUOUS)) {
        Py_INCREF(plan);
        if (oa == NULL) {
            int may = (xa->flags & WRITEABLE) != 0 ? 1 : is_root(comm, root); /* read-only: only the root's */
            ran = may < 0 ? -1 : may == 0 ? 0 : run_kept(comm, key, plan, xa, NULL, 0) < 0 ? -1 : 1;
        } else {
            ran = run_on_filled_out(comm, key, plan, xa, oa, count, root, 0);
        }
        Py_DECREF(plan);
    }
    Py_DECREF(key);
    if (ran < 0 || PyErr_Occurred()) return NULL;
    return PyBool_FromLong(ran);
}

/* reduce(comm, x, root, op, out[, algorithm]): the result of a kept reduce (the root's ``x``, or its
   ``out``: folded into straight where the plan does, else filled from ``x`` first; ``x`` elsewhere,
   where ``out`` is not used), or None. */
static PyObject *reduce(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 5 && nargs != 6) return PyErr_Format(PyExc_TypeError, "reduce(comm, x, root, op, out[, algorithm])");
    PyObject *comm = args[0], *x = args[1], *root = args[2], *op = args[3], *out = args[4];
    ArrayHead *xa = array_of(x), *oa = NULL;
    if (xa == NULL) return PyObject_Vectorcall(fallback[REDUCE], args, (size_t)nargs, NULL);
    if (!PyLong_CheckExact(root) || (out != Py_None && (oa = array_of(out)) == NULL)) Py_RETURN_NONE;
    Py_ssize_t count = count_of(xa);
    PyObject *n = PyLong_FromSsize_t(count);
    if (n == NULL) return NULL;
    PyObject *key = PyTuple_Pack(6, names[REDUCE], xa->descr, n, op, root, algorithm_of(args, nargs, 5));
    Py_DECREF(n);
    if (key == NULL) return NULL;
    PyObject *plan = kept(comm, key), *result = Py_None;
    if (plan != NULL && (xa->flags & C_CONTIGUOUS)) {
        Py_INCREF(plan);
        int here = is_root(comm, root);
        if (here < 0) {
            result = NULL;
        } else if (oa == NULL || !here) {
            if (!here || (xa->flags & WRITEABLE)) result = run_kept(comm, key, plan, xa, NULL, 0) < 0 ? NULL : x;
        } else {
            int folds = folds_into_out(plan);
            int ran = folds < 0 ? -1 : run_on_filled_out(comm, key, plan, xa, oa, count, NULL, folds);
            result = ran < 0 ? NULL : ran == 0 ? Py_None : out;
        }
        Py_DECREF(plan);
    }
    Py_DECREF(key);
    if (result == NULL || PyErr_Occurred()) return NULL;
    Py_INCREF(result);
    return result;
}

/* gather(comm, x, out, root[, algorithm]) and scatter(...): whether the kept plan ran (the
   plans take any overlap of x and out: a gather's root copies its own x first, a scatter's
   root all of x aside). Only the root's other buffer is looked at. */
static PyObject *exchange(int kind, PyObject *const *args, Py_ssize_t nargs) {
    PyObject *comm = args[0], *x = args[1], *out = args[2], *root = args[3];
    ArrayHead *mine = array_of(kind == GATHER ? x : out), *other = NULL;  /* what every rank passes */
    if (mine == NULL) return PyObject_Vectorcall(fallback[kind], args, (size_t)nargs, NULL);
    if (!PyLong_CheckExact(root)) Py_RETURN_FALSE;
    Py_ssize_t count = count_of(mine);
    PyObject *key = key_of(kind, mine, count, root, 1, algorithm_of(args, nargs, 4));
    if (key == NULL) return NULL;
    PyObject *plan = kept(comm, key);
    int ran = 0;
    int usable = (mine->flags & C_CONTIGUOUS) && (kind == GATHER || (mine->flags & WRITEABLE));
    if (plan != NULL && usable) {
        Py_INCREF(plan);
        int here = is_root(comm, root);
        PyObject *size = here > 0 ? PyObject_GetAttr(comm, s_size) : NULL;
        Py_ssize_t n = size == NULL ? 0 : PyLong_AsSsize_t(size);
        Py_XDECREF(size);
        if (here < 0 || (here > 0 && n <= 0)) {
            ran = -1;
        } else if (!here) {
            ran = run_kept(comm, key, plan, kind == GATHER ? mine : NULL, kind == GATHER ? NULL : mine, 0) < 0 ? -1 : 1;
        } else if ((other = array_of(kind == GATHER ? out : x)) != NULL) {
            /* gather: out of count * n, writable; scatter: x of count * n (only read) */
            ran = kind == GATHER ? output_ok(mine, other, count * n) : output_ok(other, mine, count);
            if (ran > 0 && kind == SCATTER) ran = count_of(other) == count * n && (other->flags & C_CONTIGUOUS);
            if (ran > 0)
                ran = run_kept(comm, key, plan, kind == GATHER ? mine : other, kind == GATHER ? other : mine, 0) < 0 ? -1 : 1;
        }
        Py_DECREF(plan);
    }
    Py_DECREF(key);
    if (ran < 0 || PyErr_Occurred()) return NULL;
    return PyBool_FromLong(ran);
}

static PyObject *gather(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 4 && nargs != 5) return PyErr_Format(PyExc_TypeError, "gather(comm, x, out, root[, algorithm])");
    return exchange(GATHER, args, nargs);
}

static PyObject *scatter(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 4 && nargs != 5) return PyErr_Format(PyExc_TypeError, "scatter(comm, x, out, root[, algorithm])");
    return exchange(SCATTER, args, nargs);
}

/* header(a): (C-contiguous, writeable, element count, dtype) as read from the header, for
   the check at import that this reading agrees with numpy's. */
static PyObject *header(PyObject *self, PyObject *a) {
    (void)self;
    ArrayHead *h = array_of(a);
    if (h == NULL) return PyErr_Format(PyExc_TypeError, "header() takes a numpy.ndarray");
    return Py_BuildValue("(OOnO)", (h->flags & C_CONTIGUOUS) ? Py_True : Py_False,
                         (h->flags & WRITEABLE) ? Py_True : Py_False, count_of(h), h->descr);
}

/* setup(ndarray, all_reduce, reduce_scatter, all_gather, broadcast, reduce, all_to_all, gather,
   scatter): numpy's array type and the Python fast path's functions, which take every other input. */
static PyObject *setup(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *type, *f[KINDS];
    if (!PyArg_ParseTuple(args, "O!OOOOOOOO", &PyType_Type, &type, &f[0], &f[1], &f[2], &f[3], &f[4], &f[5], &f[6],
                          &f[7]))
        return NULL;
    for (int k = 0; k < KINDS; k++) {
        if (!PyCallable_Check(f[k])) return PyErr_Format(PyExc_TypeError, "setup: fallback %d is not callable", k);
    }
    for (int k = 0; k < KINDS; k++) {
        Py_INCREF(f[k]);
        Py_XDECREF(fallback[k]);
        fallback[k] = f[k];
    }
    Py_INCREF(type);
    Py_XDECREF(ndarray);
    ndarray = (PyTypeObject *)type;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"all_reduce", (PyCFunction)(void (*)(void))all_reduce, METH_FASTCALL, "The result of a kept all-reduce, or None."},
    {"reduce_scatter", (PyCFunction)(void (*)(void))reduce_scatter, METH_FASTCALL, "Whether a kept reduce-scatter ran."},
    {"all_gather", (PyCFunction)(void (*)(void))all_gather, METH_FASTCALL, "Whether a kept all-gather ran."},
    {"broadcast", (PyCFunction)(void (*)(void))broadcast, METH_FASTCALL, "Whether a kept broadcast ran."},
    {"reduce", (PyCFunction)(void (*)(void))reduce, METH_FASTCALL, "The result of a kept reduce, or None."},
    {"all_to_all", (PyCFunction)(void (*)(void))all_to_all, METH_FASTCALL, "Whether a kept all-to-all ran."},
    {"gather", (PyCFunction)(void (*)(void))gather, METH_FASTCALL, "Whether a kept gather ran."},
    {"scatter", (PyCFunction)(void (*)(void))scatter, METH_FASTCALL, "Whether a kept scatter ran."},
    {"header", header, METH_O, "(C-contiguous, writeable, count, dtype) read from an ndarray's header."},
    {"setup", setup, METH_VARARGS, "setup(ndarray, all_reduce, ..., all_to_all, gather, scatter)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fast_c", "The communicator's fast path in C.", -1, methods};

PyMODINIT_FUNC PyInit__fast_c(void) {
    const char *kinds[KINDS] = {"all_reduce", "reduce_scatter", "all_gather", "broadcast", "reduce", "all_to_all",
                                "gather", "scatter"};
    for (int k = 0; k < KINDS; k++)
        if ((names[k] = PyUnicode_InternFromString(kinds[k])) == NULL) return NULL;
    if ((s_plans = PyUnicode_InternFromString("_plans")) == NULL ||
        (s_run_kept = PyUnicode_InternFromString("_run_kept")) == NULL ||
        (s_reshape = PyUnicode_InternFromString("reshape")) == NULL ||
        (s_itemsize = PyUnicode_InternFromString("itemsize")) == NULL ||
        (s_size = PyUnicode_InternFromString("size")) == NULL ||
        (s_rank = PyUnicode_InternFromString("rank")) == NULL ||
        (s_folds_into_out = PyUnicode_InternFromString("folds_into_out")) == NULL ||
        (minus_one = PyLong_FromLong(-1)) == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (kept_run_ready(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
