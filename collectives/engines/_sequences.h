/* Python sequences read into C arrays, as the window plans' constructors take their addresses and
   numbers (_small_c.c, _reads_c.c): one reader, so both say the same thing about a bad argument. */

#ifndef COLLECTIVES_SEQUENCES_H
#define COLLECTIVES_SEQUENCES_H

#include <Python.h>

/* ``seq`` as ``want`` integers (non-null addresses where ``pointers``, else longs) into ``into``;
   -1 with an error set. */
static int integers(PyObject *seq, Py_ssize_t want, int pointers, void *into, const char *what) {
    PyObject *fast = PySequence_Fast(seq, what);
    if (fast == NULL) return -1;
    if (PySequence_Fast_GET_SIZE(fast) != want) {
        PyErr_Format(PyExc_ValueError, "%s: %zd %s, expected %zd", what, PySequence_Fast_GET_SIZE(fast),
                     pointers ? "addresses" : "items", want);
        Py_DECREF(fast);
        return -1;
    }
    for (Py_ssize_t i = 0; i < want; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(fast, i);
        if (pointers) {
            ((void **)into)[i] = PyLong_AsVoidPtr(item);
            if (((void **)into)[i] == NULL && !PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "%s: a null address", what);
        } else {
            ((long *)into)[i] = PyLong_AsLong(item);
        }
        if (PyErr_Occurred()) {
            Py_DECREF(fast);
            return -1;
        }
    }
    Py_DECREF(fast);
    return 0;
}

/* ``seq`` as ``want`` non-null addresses into ``into``; -1 with an error set. */
static inline int addresses(PyObject *seq, Py_ssize_t want, void *into, const char *what) {
    return integers(seq, want, 1, into, what);
}

#endif
