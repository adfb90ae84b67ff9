/* Whether the engine's state lets the express lane (_express_c.c, which includes this after its
   Express type and interned names) take a call: the channel's error, intake, queued sends, half
   read or unexpected frames, posted receives and held-back header, read from their Python
   attributes (transports/base.py, engines/point_to_point.py). Each answers 1 (free), 0, or -1
   with an error set. */

#ifndef COLLECTIVES_LANE_GATE_H
#define COLLECTIVES_LANE_GATE_H

/* Whether attribute ``name`` of ``o`` is None (0), not None (1); -1 with an error set. */
static int is_set(PyObject *o, PyObject *name) {
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL) return -1;
    int set = v != Py_None;
    Py_DECREF(v);
    return set;
}

/* Whether the container attribute ``name`` of ``o`` is non-empty; -1 with an error set. */
static int filled(PyObject *o, PyObject *name) {
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL) return -1;
    int full = PyObject_IsTrue(v);
    Py_DECREF(v);
    return full;
}

/* Whether ``dict`` (attribute ``name`` of ``o``, or ``o`` itself where name is NULL) holds
   a non-empty entry under ``key``; -1 with an error set. */
static int has_entry(PyObject *o, PyObject *name, PyObject *key) {
    PyObject *d = name != NULL ? PyObject_GetAttr(o, name) : (Py_INCREF(o), o);
    if (d == NULL) return -1;
    int found = 0;
    if (!PyDict_Check(d)) {
        found = 1; /* not what this file was written against: leave it to the engine */
    } else {
        PyObject *v = PyDict_GetItemWithError(d, key);
        if (v != NULL) found = PyObject_IsTrue(v);
        else if (PyErr_Occurred()) found = -1;
    }
    Py_DECREF(d);
    return found;
}

/* Whether the channel lets a send go now: no error, nothing on the intake or queued. */
static int send_free(const Lane *lane) {
    int r;
    if ((r = is_set(lane->channel, s_error)) != 0) return r < 0 ? -1 : 0;
    if ((r = filled(lane->channel, s_intake)) != 0) return r < 0 ? -1 : 0;
    if ((r = filled(lane->channel, s_sendq)) != 0) return r < 0 ? -1 : 0;
    return 1;
}

/* Whether the header the engine read and held back one call (``_rx_deferred``: the peer's next
   frame came before its receive was posted, transports/base.py) is a whole plain message of
   ``tag`` and ``n`` bytes: 1 it is (its payload is next in the ring), 0 not, -1 with an error set. */
static int deferred_is(PyObject *deferred, uint64_t tag, uint64_t n) {
    if (!PyTuple_Check(deferred) || PyTuple_GET_SIZE(deferred) != 3) return 0;
    uint64_t h[3];
    for (int i = 0; i < 3; i++) {
        h[i] = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(deferred, i));
        if (PyErr_Occurred()) return -1;
    }
    return h[0] == tag && h[1] == n && h[2] == FLAG_END;
}

/* Whether the channel and the engine let a receive of ``tag`` (``wire`` on the wire, ``n``
   bytes) take the ring's next frame now (``held_ok``: messages of the tag held by the engine are
   the caller's to look at). With ``headless`` (else NULL), a header the engine held back is
   taken too where it is this receive's: *headless is then 1, and only its payload is in the
   ring. Without it, a rank whose engine took one receive (its peer's frame late for the lane's
   wait) read the next frame's header ahead, so the next call's receive was the engine's too, and
   so on: a mode where every receive cost the engine's progress loop. */
static int recv_free(Express *e, const Lane *lane, PyObject *tag, int held_ok, uint64_t wire, uint64_t n, int *headless) {
    PyObject *c = lane->channel;
    int r;
    if ((r = is_set(c, s_error)) != 0) return r < 0 ? -1 : 0;
    if ((r = is_set(c, s_eof)) != 0) return r < 0 ? -1 : 0;
    if ((r = filled(c, s_intake)) != 0) return r < 0 ? -1 : 0;
    if ((r = filled(c, s_rx_have)) != 0) return r < 0 ? -1 : 0;
    if ((r = is_set(c, s_rx_target)) != 0) return r < 0 ? -1 : 0;
    if ((r = has_entry(c, s_posted, tag)) != 0) return r < 0 ? -1 : 0;
    if (!held_ok && (r = has_entry(c, s_unexpected, tag)) != 0) return r < 0 ? -1 : 0;
    if ((r = has_entry(e->held, NULL, tag)) != 0) return r < 0 ? -1 : 0;
    PyObject *deferred = PyObject_GetAttr(c, s_rx_deferred);
    if (deferred == NULL) return -1;
    r = deferred == Py_None ? 1 : headless == NULL ? 0 : deferred_is(deferred, wire, n);
    Py_DECREF(deferred);
    if (headless != NULL) *headless = r > 0 && deferred != Py_None;
    return r;
}

#endif
