/* Drain a datagram socket into one buffer, without the GIL: the statsd reader's inner loop.
 *
 * drain(fd, buffer, offset, wait_first) -> (end, datagrams, truncated, empty)
 *
 * Reads datagrams with recv() into the writable buffer from `offset` on, each followed by a
 * newline, while more than DATAGRAM_BYTES_MAX bytes remain (so any datagram fits). The first
 * recv() blocks when `wait_first` is true; every other one uses MSG_DONTWAIT, and the loop ends
 * when the socket is empty. A datagram longer than DATAGRAM_BYTES_MAX is dropped whole and
 * counted in `truncated` (a cut line would parse as another metric); an empty datagram writes
 * nothing and is counted in `empty` (the agent wakes a blocked reader with one at shutdown).
 * Returns the offset after the last newline written. Any error other than "would block" or an
 * interrupted call raises OSError.
 *
 * Why in C: in Python each datagram costs a method call, a slice and a store besides the
 * system call, about a microsecond and a half with the GIL held; here the thread holds no GIL
 * while it drains, so the event loop parses the previous batch meanwhile.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <sys/socket.h>
#include <sys/types.h>

#define DATAGRAM_BYTES_MAX 65536

static PyObject *drain(PyObject *module, PyObject *args) {
    (void)module;
    int fd;
    Py_buffer view;
    Py_ssize_t offset;
    int wait_first;
    if (!PyArg_ParseTuple(args, "iw*np", &fd, &view, &offset, &wait_first)) {
        return NULL;
    }
    if (offset < 0 || offset > view.len) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "offset outside the buffer");
        return NULL;
    }
    char *base = (char *)view.buf;
    Py_ssize_t size = view.len;
    Py_ssize_t end = offset;
    long datagrams = 0, truncated = 0, empty = 0;
    int failure = 0;
    int flags = wait_first ? 0 : MSG_DONTWAIT;
    /* The exported buffer cannot be resized meanwhile: a bytearray refuses while exported. */
    Py_BEGIN_ALLOW_THREADS
    while (size - end > DATAGRAM_BYTES_MAX) {
        ssize_t got = recv(fd, base + end, DATAGRAM_BYTES_MAX, flags | MSG_TRUNC);
        if (got < 0) {
            if (errno == EINTR) {
                if (datagrams || empty || truncated) {
                    break;
                }
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                failure = errno;
            }
            break;
        }
        flags = MSG_DONTWAIT;
        if (got == 0) {
            empty++;
        } else if (got > DATAGRAM_BYTES_MAX) {
            truncated++;
        } else {
            end += got;
            base[end++] = '\n';
            datagrams++;
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (failure) {
        errno = failure;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return Py_BuildValue("nlll", end, datagrams, truncated, empty);
}

static PyMethodDef methods[] = {
    {"drain", drain, METH_VARARGS,
     "drain(fd, buffer, offset, wait_first) -> (end, datagrams, truncated, empty)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_drain", "Drain a datagram socket into a buffer.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__drain(void) {
    PyObject *created = PyModule_Create(&module);
    if (created == NULL) {
        return NULL;
    }
    if (PyModule_AddIntConstant(created, "DATAGRAM_BYTES_MAX", DATAGRAM_BYTES_MAX) != 0) {
        Py_DECREF(created);
        return NULL;
    }
    return created;
}
