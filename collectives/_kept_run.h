/* ``KeptRun``: the steps of ``Communicator._run_kept`` in C, for the C fast path (_fast_c.c)
   and, called from Python, ``Communicator.barrier``.

   A repeated small call's own work is a few hundred nanoseconds; the bookkeeping around it in
   Python (the run lock, the sequence number, the deadline, the flight recorder's slot, two
   clock reads) cost about as much again. These are the same steps, in the same order, on
   the same objects, so both paths number, time, record and fail alike
   (tests/collectives/test_kept_run.py runs each case through both). */

#ifndef COLLECTIVES_KEPT_RUN_H
#define COLLECTIVES_KEPT_RUN_H

#include <Python.h>
#include <structmember.h>
#include <time.h>

static PyObject *s_kept_run, *s_run_lock, *s_closed, *s_broken, *s_open_blocks, *s_group_timeout, *s_timeout,
    *s_check_open, *s_failed, *s_name, *s_seq, *s_deadline, *s_acquire, *s_release, *s_call, *s_numbers, *s_slots;

/* A communicator's kept runs: what ``Communicator._run_kept`` reads that never changes (its
   run lock's methods, the Call, the sequence numbers, the flight recorder's ring) and its
   ``__dict__`` for what does (closed, broken, the timeout). Made once per communicator
   (``_fast_path.kept_run``); the ring of the dict back to it is collected as a cycle. */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;  /* run(comm, key, plan, x, out) from Python: kept_run_vectorcall */
    PyObject *state;            /* the communicator's __dict__ */
    PyObject *acquire, *release; /* its run lock's bound methods */
    PyObject *call;             /* engines.call.Call: the operation under way */
    PyObject *numbers;          /* itertools.count: collective sequence numbers */
    PyObject *slots;            /* the flight recorder's ring: a list of TRACE_ENTRIES 5-item lists */
    PyObject *nothing;          /* plans.base.nothing: the plan of a call with nothing to move */
    Py_ssize_t mask;            /* TRACE_ENTRIES - 1 */
    Py_ssize_t fields[4];       /* where the Call's name, seq, timeout and deadline slots lie in it */
} KeptRun;

enum { F_NAME, F_SEQ, F_TIMEOUT, F_DEADLINE };

enum { KEY, SEQ, STARTED, ENDED }; /* flight_recorder's slot fields */

static int kept_run_traverse(KeptRun *r, visitproc visit, void *arg) {
    Py_VISIT(r->state);
    Py_VISIT(r->acquire);
    Py_VISIT(r->release);
    Py_VISIT(r->call);
    Py_VISIT(r->numbers);
    Py_VISIT(r->slots);
    Py_VISIT(r->nothing);
    return 0;
}

static int kept_run_clear(KeptRun *r) {
    Py_CLEAR(r->state);
    Py_CLEAR(r->acquire);
    Py_CLEAR(r->release);
    Py_CLEAR(r->call);
    Py_CLEAR(r->numbers);
    Py_CLEAR(r->slots);
    Py_CLEAR(r->nothing);
    return 0;
}

static void kept_run_dealloc(KeptRun *r) {
    PyObject_GC_UnTrack(r);
    kept_run_clear(r);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

static PyObject *kept_run_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames);

/* KeptRun(comm, nothing, entries): from a communicator whose __init__ has run. */
static PyObject *kept_run_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *comm, *nothing;
    Py_ssize_t entries;
    if (kwds != NULL && PyDict_GET_SIZE(kwds) != 0) return PyErr_Format(PyExc_TypeError, "KeptRun takes no keywords");
    if (!PyArg_ParseTuple(args, "OOn", &comm, &nothing, &entries)) return NULL;
    if (entries <= 0 || (entries & (entries - 1)) != 0)
        return PyErr_Format(PyExc_ValueError, "KeptRun: entries must be a power of two, got %zd", entries);
    KeptRun *r = (KeptRun *)type->tp_alloc(type, 0);
    if (r == NULL) return NULL;
    PyObject *lock = NULL;
    r->vectorcall = kept_run_vectorcall;
    r->mask = entries - 1;
    Py_INCREF(nothing);
    r->nothing = nothing;
    if ((r->state = PyObject_GenericGetDict(comm, NULL)) == NULL || (lock = PyObject_GetAttr(comm, s_run_lock)) == NULL ||
        (r->acquire = PyObject_GetAttr(lock, s_acquire)) == NULL ||
        (r->release = PyObject_GetAttr(lock, s_release)) == NULL || (r->call = PyObject_GetAttr(comm, s_call)) == NULL ||
        (r->numbers = PyObject_GetAttr(comm, s_numbers)) == NULL || (r->slots = PyObject_GetAttr(comm, s_slots)) == NULL)
        goto fail;
    Py_CLEAR(lock);
    PyObject *field_names[4] = {s_name, s_seq, s_timeout, s_deadline};
    for (int f = 0; f < 4; f++) { /* the Call's __slots__: written in place, as the interpreter does */
        PyObject *d = PyObject_GetAttr((PyObject *)Py_TYPE(r->call), field_names[f]);
        if (d == NULL) goto fail;
        int member = Py_TYPE(d) == &PyMemberDescr_Type && ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX;
        if (member) r->fields[f] = ((PyMemberDescrObject *)d)->d_member->offset;
        Py_DECREF(d);
        if (!member) {
            PyErr_Format(PyExc_TypeError, "KeptRun: the call's %U is not a __slots__ field", field_names[f]);
            goto fail;
        }
    }
    if (!PyList_CheckExact(r->slots) || PyList_GET_SIZE(r->slots) != entries) {
        PyErr_Format(PyExc_TypeError, "KeptRun: the flight recorder's ring must be a list of %zd slots", entries);
        goto fail;
    }
    for (Py_ssize_t i = 0; i < entries; i++) {
        PyObject *slot = PyList_GET_ITEM(r->slots, i);
        if (!PyList_CheckExact(slot) || PyList_GET_SIZE(slot) <= ENDED) {
            PyErr_Format(PyExc_TypeError, "KeptRun: flight recorder slot %zd is not a list of its fields", i);
            goto fail;
        }
    }
    return (PyObject *)r;
fail:
    Py_XDECREF(lock);
    Py_DECREF(r);
    return NULL;
}

static PyTypeObject KeptRunType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "collectives._fast_c.KeptRun",
    .tp_basicsize = sizeof(KeptRun),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(KeptRun, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_doc = "A communicator's kept runs in C: Communicator._run_kept's steps; called as\n"
              "run(comm, key, plan, x, out) it is comm._run_kept(key, plan, x, out).",
    .tp_new = kept_run_new,
    .tp_traverse = (traverseproc)kept_run_traverse,
    .tp_clear = (inquiry)kept_run_clear,
    .tp_dealloc = (destructor)kept_run_dealloc,
};

static double monotonic(void) { /* time.monotonic()'s clock */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ``value`` into the list ``slot`` at ``i`` (a new reference taken). */
static void put(PyObject *slot, Py_ssize_t i, PyObject *value) {
    PyObject *old = PyList_GET_ITEM(slot, i);
    Py_INCREF(value);
    PyList_SET_ITEM(slot, i, value);
    Py_XDECREF(old);
}

/* The Call's field ``f`` := ``value`` (a new reference taken). */
static inline void set_field(KeptRun *r, int f, PyObject *value) {
    PyObject **at = (PyObject **)((char *)r->call + r->fields[f]), *old = *at;
    Py_INCREF(value);
    *at = value;
    Py_XDECREF(old);
}

/* The state item ``name`` of the communicator (borrowed), or NULL with AttributeError set. */
static PyObject *state_of(KeptRun *r, PyObject *name) {
    PyObject *v = PyDict_GetItemWithError(r->state, name);
    if (v == NULL && !PyErr_Occurred()) PyErr_SetObject(PyExc_AttributeError, name);
    return v;
}

/* The call's timeout: the group's, or the thread's ``op_timeout`` where a block is open (the
   ``timeout`` property). A new reference, or NULL. */
static PyObject *timeout_of(KeptRun *r, PyObject *comm) {
    PyObject *blocks = state_of(r, s_open_blocks);
    if (blocks == NULL) return NULL;
    int open = PyObject_IsTrue(blocks);
    if (open < 0) return NULL;
    if (open) return PyObject_GetAttr(comm, s_timeout);
    PyObject *t = state_of(r, s_group_timeout);
    Py_XINCREF(t);
    return t;
}

/* What call ``n`` records as its key: the key of call n - 1 where the two are equal, else ``key``
   (borrowed). A key is a new tuple per call, and the ring keeps each until it comes round
   (TRACE_ENTRIES calls): a new object the garbage collector counts for every call, so that a run
   of calls on a fresh communicator set off a collection every few hundred of them, in the middle
   of a call on every rank at once. A repeated call keeps one key object in the ring instead. */
static PyObject *ring_key(KeptRun *r, Py_ssize_t n, PyObject *key) {
    PyObject *prev = PyList_GET_ITEM(PyList_GET_ITEM(r->slots, (n - 1) & r->mask), KEY);
    if (prev == key || !PyTuple_CheckExact(prev) || PyTuple_GET_SIZE(prev) != PyTuple_GET_SIZE(key)) return key;
    int same = PyObject_RichCompareBool(prev, key, Py_EQ);
    if (same < 0) PyErr_Clear(); /* (keys that cannot be compared: the call's own is recorded) */
    return same > 0 ? prev : key;
}

/* Communicator._run_kept(key, plan, x, out), step for step: 0, or -1 with the error set. */
static int kept_run(KeptRun *r, PyObject *comm, PyObject *key, PyObject *plan, PyObject *x, PyObject *out) {
    if (plan == r->nothing) { /* nothing to number, record or wait for */
        PyObject *ok = PyObject_CallMethodNoArgs(comm, s_check_open);
        Py_XDECREF(ok);
        return ok == NULL ? -1 : 0;
    }
    PyObject *got = PyObject_CallNoArgs(r->acquire);
    if (got == NULL) return -1;
    Py_DECREF(got);
    int rc = -1;
    PyObject *seq = NULL, *timeout = NULL, *now = NULL, *deadline = NULL, *name = PyTuple_GET_ITEM(key, 0);
    PyObject *closed = state_of(r, s_closed), *broken = closed == NULL ? NULL : state_of(r, s_broken);
    if (broken == NULL) goto unlock;
    int shut = PyObject_IsTrue(closed);
    if (shut < 0) goto unlock;
    if (shut || broken != Py_None) {
        PyObject *ok = PyObject_CallMethodNoArgs(comm, s_check_open);
        if (ok == NULL) goto unlock;
        Py_DECREF(ok);
    }
    if ((seq = PyIter_Next(r->numbers)) == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "the sequence numbers ran out");
        goto unlock;
    }
    Py_ssize_t n = PyLong_AsSsize_t(seq);
    if (n == -1 && PyErr_Occurred()) goto unlock;
    if ((timeout = timeout_of(r, comm)) == NULL) goto unlock;
    double t = PyFloat_AsDouble(timeout), start = monotonic();
    if (t == -1.0 && PyErr_Occurred()) goto unlock;
    if ((now = PyFloat_FromDouble(start)) == NULL || (deadline = PyFloat_FromDouble(start + t)) == NULL) goto unlock;
    set_field(r, F_NAME, name);
    set_field(r, F_SEQ, seq);
    set_field(r, F_TIMEOUT, timeout);
    set_field(r, F_DEADLINE, deadline);
    PyObject *slot = PyList_GET_ITEM(r->slots, n & r->mask);
    put(slot, KEY, ring_key(r, n, key));
    put(slot, SEQ, seq);
    put(slot, STARTED, now);
    PyObject *args[3] = {x, out, r->call};
    PyObject *done = PyObject_Vectorcall(plan, args, 3, NULL);
    if (done == NULL) { /* self._failed(name, seq, exc), as from the ``except`` block */
        PyObject *type, *exc, *tb;
        PyErr_Fetch(&type, &exc, &tb);
        PyErr_NormalizeException(&type, &exc, &tb);
        if (tb != NULL) PyException_SetTraceback(exc, tb);
        PyObject *raised = PyObject_CallMethodObjArgs(comm, s_failed, name, seq, exc, NULL);
        if (raised == NULL) { /* (it raises: NoReturn) */
            PyObject *t2, *e2, *tb2;
            PyErr_Fetch(&t2, &e2, &tb2);
            PyErr_NormalizeException(&t2, &e2, &tb2);
            PyObject *context = PyException_GetContext(e2); /* (a new reference) */
            if (context == NULL && e2 != exc) { /* raised in the handler: the failure is its context */
                Py_INCREF(exc);
                PyException_SetContext(e2, exc);
            }
            Py_XDECREF(context);
            PyErr_Restore(t2, e2, tb2);
        }
        Py_XDECREF(type);
        Py_XDECREF(exc);
        Py_XDECREF(tb);
        if (raised == NULL) goto unlock;
        done = raised; /* it returned: the call goes on as Python's would after the handler */
    }
    Py_DECREF(done);
    PyObject *ended = PyFloat_FromDouble(monotonic());
    if (ended == NULL) goto unlock;
    put(slot, ENDED, ended);
    Py_DECREF(ended);
    rc = 0;
unlock:;
    PyObject *et, *ev, *etb;
    PyErr_Fetch(&et, &ev, &etb); /* release keeps the error under way */
    PyObject *released = PyObject_CallNoArgs(r->release);
    if (released == NULL) {
        Py_XDECREF(et);
        Py_XDECREF(ev);
        Py_XDECREF(etb);
        rc = -1;
    } else {
        Py_DECREF(released);
        PyErr_Restore(et, ev, etb);
    }
    Py_XDECREF(seq);
    Py_XDECREF(timeout);
    Py_XDECREF(now);
    Py_XDECREF(deadline);
    return rc;
}

/* run(comm, key, plan, x, out): ``kept_run`` for Python callers (Communicator.barrier). */
static PyObject *kept_run_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    if ((kwnames != NULL && PyTuple_GET_SIZE(kwnames)) || PyVectorcall_NARGS(nargsf) != 5)
        return PyErr_Format(PyExc_TypeError, "KeptRun takes (comm, key, plan, x, out)");
    if (!PyTuple_Check(args[1]) || PyTuple_GET_SIZE(args[1]) == 0)
        return PyErr_Format(PyExc_TypeError, "KeptRun: the key must be a tuple that starts with the call's name");
    if (kept_run((KeptRun *)self, args[0], args[1], args[2], args[3], args[4]) < 0) return NULL;
    Py_RETURN_NONE;
}

/* Intern the names read and add the type to ``module``: 0, or -1 with an error set. */
static int kept_run_ready(PyObject *module) {
    const char *text[] = {"_kept_run", "_run_lock", "_closed", "_broken", "_open_blocks", "_group_timeout", "timeout",
                          "_check_open", "_failed", "name", "seq", "deadline", "acquire", "release", "_call",
                          "_collective_numbers", "_trace_slots"};
    PyObject **interned[] = {&s_kept_run, &s_run_lock, &s_closed, &s_broken, &s_open_blocks, &s_group_timeout,
                             &s_timeout, &s_check_open, &s_failed, &s_name, &s_seq, &s_deadline, &s_acquire,
                             &s_release, &s_call, &s_numbers, &s_slots};
    for (size_t i = 0; i < sizeof(text) / sizeof(text[0]); i++)
        if ((*interned[i] = PyUnicode_InternFromString(text[i])) == NULL) return -1;
    if (PyType_Ready(&KeptRunType) < 0) return -1;
    Py_INCREF(&KeptRunType);
    if (PyModule_AddObject(module, "KeptRun", (PyObject *)&KeptRunType) < 0) {
        Py_DECREF(&KeptRunType);
        return -1;
    }
    return 0;
}

#endif
