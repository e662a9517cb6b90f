/* One compiled pass over a buffer of statsd lines: the structure of every line, its numbers and
 * its name and tag segments interned by their exact bytes.
 *
 * This is the compiled twin of crdtstream/ingest/_scan.py, _numbers.py and _intern.py: it
 * marks a line *simple* under the same rules (printable ASCII, name:values|type with a known
 * type, optional fields each one of @rate, #tags, T<seconds> at most once or an ``ext:...``
 * extension), parses plain decimals exactly as Python's float() would (at most 15 digits: an
 * integer mantissa below 2**53 divided by an exact power of ten, one correct rounding), and
 * groups names and tag lists with a hash table that compares bytes, so there are no collisions
 * to report. Everything it cannot prove simple is left for the exact per-line parser.
 *
 * scan(data, max_line_bytes, now_ms, max_member_bytes) -> tuple of bytes objects, each the raw
 * little-endian contents of one array (see _compiled.py for their names and dtypes). The buffer
 * must end with a newline. No Python object is touched while scanning.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DIGITS 15
#define MAX_TIMESTAMP_DIGITS 12

enum { KIND_COUNTER = 0, KIND_GAUGE = 1, KIND_DISTINCT = 2, KIND_DISTRIBUTION = 3, NO_KIND = -1 };

static const double POWERS_OF_TEN[MAX_DIGITS + 1] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
};

/* ------------------------------------------------------------------ growable arrays */

typedef struct {
    char *data;
    Py_ssize_t count;
    Py_ssize_t capacity;
    Py_ssize_t item;
} Vec;

static int vec_init(Vec *vec, Py_ssize_t item, Py_ssize_t capacity) {
    vec->item = item;
    vec->count = 0;
    vec->capacity = capacity > 16 ? capacity : 16;
    vec->data = malloc((size_t)(vec->capacity * item));
    return vec->data != NULL ? 0 : -1;
}

static void *vec_push(Vec *vec) {
    if (vec->count == vec->capacity) {
        Py_ssize_t capacity = vec->capacity * 2;
        char *grown = realloc(vec->data, (size_t)(capacity * vec->item));
        if (grown == NULL) {
            return NULL;
        }
        vec->data = grown;
        vec->capacity = capacity;
    }
    return vec->data + (vec->count++) * vec->item;
}

static PyObject *vec_bytes(const Vec *vec) {
    return PyBytes_FromStringAndSize(vec->data, vec->count * vec->item);
}

/* ------------------------------------------------------------------ interning */

static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* A 64-bit hash of a segment's bytes, read eight at a time; the last, partial word is read
 * as the eight bytes ending the segment (bytes before it are inside the segment too), so
 * nothing outside [at, at + length) is touched. */
static uint64_t segment_hash(const unsigned char *at, Py_ssize_t length) {
    uint64_t hash = (uint64_t)length * 0x9E3779B97F4A7C15ULL;
    uint64_t word;
    Py_ssize_t offset = 0;
    for (; offset + 8 <= length; offset += 8) {
        memcpy(&word, at + offset, 8);
        hash = (hash ^ word) * 0xFF51AFD7ED558CCDULL;
        hash ^= hash >> 29;
    }
    if (offset < length) {
        if (length >= 8) {
            memcpy(&word, at + length - 8, 8);
        } else {
            word = 0;
            for (Py_ssize_t index = 0; index < length; index++) {
                word |= (uint64_t)at[index] << (8 * index);
            }
        }
        hash = (hash ^ word) * 0xFF51AFD7ED558CCDULL;
    }
    return mix64(hash);
}

/* Distinct segments of one buffer, found by an open-addressing table of representative
 * numbers (0: empty slot, else representative + 1). */
typedef struct {
    const unsigned char *buffer;
    uint32_t *slots;
    uint64_t mask;
    Vec starts;  /* int64: each representative's segment */
    Vec ends;
    Vec hashes;  /* uint64 */
} Interner;

static int interner_init(Interner *interner, const unsigned char *buffer, Py_ssize_t lines) {
    uint64_t size = 1024;
    while (size < (uint64_t)lines) {
        size <<= 1;
    }
    interner->buffer = buffer;
    interner->mask = size - 1;
    interner->slots = calloc(size, sizeof(uint32_t));
    if (interner->slots == NULL) {
        return -1;
    }
    if (vec_init(&interner->starts, 8, 256) || vec_init(&interner->ends, 8, 256) ||
        vec_init(&interner->hashes, 8, 256)) {
        return -1;
    }
    return 0;
}

static void interner_free(Interner *interner) {
    free(interner->slots);
    free(interner->starts.data);
    free(interner->ends.data);
    free(interner->hashes.data);
}

/* Doubles the table (kept at most half full), placing every representative anew. */
static int interner_grow(Interner *interner) {
    uint64_t size = (interner->mask + 1) * 2;
    uint32_t *slots = calloc(size, sizeof(uint32_t));
    if (slots == NULL) {
        return -1;
    }
    const uint64_t *hashes = (const uint64_t *)interner->hashes.data;
    for (Py_ssize_t number = 0; number < interner->hashes.count; number++) {
        uint64_t slot = hashes[number] & (size - 1);
        while (slots[slot] != 0) {
            slot = (slot + 1) & (size - 1);
        }
        slots[slot] = (uint32_t)(number + 1);
    }
    free(interner->slots);
    interner->slots = slots;
    interner->mask = size - 1;
    return 0;
}

/* The representative number of the segment [start, end); -2 when out of memory. */
static int64_t intern(Interner *interner, int64_t start, int64_t end) {
    const unsigned char *at = interner->buffer + start;
    Py_ssize_t length = (Py_ssize_t)(end - start);
    uint64_t hash = segment_hash(at, length);
    uint64_t slot = hash & interner->mask;
    const int64_t *starts = (const int64_t *)interner->starts.data;
    const int64_t *ends = (const int64_t *)interner->ends.data;
    const uint64_t *hashes = (const uint64_t *)interner->hashes.data;
    for (;;) {
        uint32_t held = interner->slots[slot];
        if (held == 0) {
            break;
        }
        int64_t found = (int64_t)held - 1;
        if (hashes[found] == hash && ends[found] - starts[found] == length &&
            memcmp(interner->buffer + starts[found], at, (size_t)length) == 0) {
            return found;
        }
        slot = (slot + 1) & interner->mask;
    }
    int64_t number = interner->starts.count;
    int64_t *new_start = vec_push(&interner->starts);
    int64_t *new_end = vec_push(&interner->ends);
    uint64_t *new_hash = vec_push(&interner->hashes);
    if (new_start == NULL || new_end == NULL || new_hash == NULL) {
        return -2;
    }
    *new_start = start;
    *new_end = end;
    *new_hash = hash;
    interner->slots[slot] = (uint32_t)(number + 1);
    if ((uint64_t)(number + 1) * 2 > interner->mask && interner_grow(interner) != 0) {
        return -2;
    }
    return number;
}

/* ------------------------------------------------------------------ numbers */

/* A plain decimal [+-]digits[.digits] of at most MAX_DIGITS digits, as float() reads it.
 * Returns 1 and sets *value when the text is such a number, else 0. */
static int plain_decimal(const unsigned char *at, Py_ssize_t length, int allow_sign,
                         int allow_dot, double *value, int *signed_out) {
    Py_ssize_t index = 0;
    int negative = 0;
    *signed_out = 0;
    if (length > 0 && allow_sign && (at[0] == '+' || at[0] == '-')) {
        negative = at[0] == '-';
        *signed_out = 1;
        index = 1;
    }
    uint64_t mantissa = 0;
    int digits = 0;
    int fraction_digits = 0;
    int seen_dot = 0;
    for (; index < length; index++) {
        unsigned char byte = at[index];
        if (byte >= '0' && byte <= '9') {
            if (++digits > MAX_DIGITS) {
                return 0;
            }
            mantissa = mantissa * 10 + (uint64_t)(byte - '0');
            fraction_digits += seen_dot;
        } else if (byte == '.' && allow_dot && !seen_dot) {
            seen_dot = 1;
        } else {
            return 0;
        }
    }
    if (digits == 0) {
        return 0;
    }
    double result = (double)mantissa / POWERS_OF_TEN[fraction_digits];
    *value = negative ? -result : result;
    return 1;
}

/* ------------------------------------------------------------------ lines */

typedef struct {
    Vec starts, ends, simple, kind, rate, timestamp_ms, name_group, tags_group, value_start,
        value_end;
    Vec row_line, row_start, row_end, row_value, row_signed, row_exact;
    Interner names, tags;
} Scan;

static int8_t type_kind(const unsigned char *at, Py_ssize_t length) {
    if (length == 1) {
        switch (at[0]) {
            case 'c': return KIND_COUNTER;
            case 'g': return KIND_GAUGE;
            case 's': return KIND_DISTINCT;
            case 'h':
            case 'd': return KIND_DISTRIBUTION;
            default: return NO_KIND;
        }
    }
    if (length == 2 && at[0] == 'm' && at[1] == 's') {
        return KIND_DISTRIBUTION;
    }
    return NO_KIND;
}

/* Fills the per-line facts of a structurally simple line; returns 0 when it is not simple
 * after all, -1 when out of memory. */
static inline int64_t next_pipe(const unsigned char *buffer, int64_t from, int64_t end) {
    const unsigned char *found = memchr(buffer + from, '|', (size_t)(end - from));
    return found != NULL ? (int64_t)(found - buffer) : end;
}

static int simple_line(Scan *scan, const unsigned char *buffer, int64_t line, int64_t start,
                       int64_t end, int64_t value_end, int64_t colon, int64_t now_ms,
                       Py_ssize_t max_member_bytes, int8_t *kind_out, double *rate_out,
                       int64_t *timestamp_out, int64_t *name_group, int64_t *tags_group) {
    int64_t type_end = next_pipe(buffer, value_end + 1, end);
    int8_t kind = type_kind(buffer + value_end + 1, (Py_ssize_t)(type_end - value_end - 1));
    *kind_out = kind;
    if (kind == NO_KIND) {
        return 0;
    }
    int64_t tags_start = -1, tags_end = -1;
    int seen_rate = 0, seen_time = 0;
    double rate = 1.0;
    int64_t timestamp_ms = now_ms;
    for (int64_t pipe = type_end; pipe < end;) {
        int64_t field_start = pipe + 1;
        int64_t field_end = next_pipe(buffer, field_start, end);
        pipe = field_end;
        if (field_end <= field_start) {
            return 0;
        }
        const unsigned char *text = buffer + field_start + 1;
        Py_ssize_t length = (Py_ssize_t)(field_end - field_start - 1);
        unsigned char marker = buffer[field_start];
        int sign;
        if (marker == '@') {
            if (seen_rate++ || !plain_decimal(text, length, 1, 1, &rate, &sign) ||
                !(rate > 0.0 && rate <= 1.0)) {
                return 0;
            }
        } else if (marker == '#') {
            if (tags_start >= 0) {
                return 0;
            }
            tags_start = field_start + 1;
            tags_end = field_end;
        } else if (marker == 'T') {
            double seconds;
            if (seen_time++ || length > MAX_TIMESTAMP_DIGITS ||
                !plain_decimal(text, length, 0, 0, &seconds, &sign)) {
                return 0;
            }
            timestamp_ms = (int64_t)seconds * 1000;
        } else if (marker >= 'a' && marker <= 'z') {
            if (memchr(buffer + field_start, ':', (size_t)(field_end - field_start)) == NULL) {
                return 0;
            }
        } else {
            return 0;
        }
    }
    if (kind == KIND_DISTINCT) {
        int64_t member_bytes = value_end - colon - 1;
        if (member_bytes <= 0 || member_bytes > max_member_bytes) {
            return 0;
        }
    } else {
        int64_t piece = colon + 1;
        while (piece <= value_end) {
            const unsigned char *found =
                memchr(buffer + piece, ':', (size_t)(value_end - piece));
            int64_t piece_end = found != NULL ? (int64_t)(found - buffer) : value_end;
            int64_t *row_line = vec_push(&scan->row_line);
            int64_t *row_start = vec_push(&scan->row_start);
            int64_t *row_end = vec_push(&scan->row_end);
            double *row_value = vec_push(&scan->row_value);
            uint8_t *row_signed = vec_push(&scan->row_signed);
            uint8_t *row_exact = vec_push(&scan->row_exact);
            if (!row_line || !row_start || !row_end || !row_value || !row_signed || !row_exact) {
                return -1;
            }
            int sign = 0;
            double value = 0.0;
            *row_exact = (uint8_t)plain_decimal(buffer + piece, (Py_ssize_t)(piece_end - piece),
                                                1, 1, &value, &sign);
            *row_line = line;
            *row_start = piece;
            *row_end = piece_end;
            *row_value = value;
            *row_signed = (uint8_t)((piece_end > piece) &&
                                    (buffer[piece] == '+' || buffer[piece] == '-'));
            piece = piece_end + 1;
        }
    }
    *rate_out = rate;
    *timestamp_out = timestamp_ms;
    *name_group = intern(&scan->names, start, colon);
    *tags_group = tags_start >= 0 ? intern(&scan->tags, tags_start, tags_end) : -1;
    if (*name_group == -2 || *tags_group == -2) {
        return -1;
    }
    return 1;
}

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Whether any byte of the word is below 0x21 (space, control) or above 0x7E (DEL, non-ASCII):
 * the classic word-at-a-time tests, exact as a yes/no answer. */
static inline int odd_word(uint64_t word) {
    uint64_t below = (word - ONES * 0x21) & ~word;
    uint64_t above = (word + ONES * (0x7F - 0x7E)) | word;
    return ((below | above) & HIGHS) != 0;
}

/* Whether [start, end) holds only printable ASCII other than space. */
static int printable(const unsigned char *buffer, int64_t start, int64_t end) {
    int64_t at = start;
    for (; at + 8 <= end; at += 8) {
        uint64_t word;
        memcpy(&word, buffer + at, 8);
        if (odd_word(word)) {
            return 0;
        }
    }
    for (; at < end; at++) {
        if ((unsigned char)(buffer[at] - 0x21) > 0x7E - 0x21) {
            return 0;
        }
    }
    return 1;
}

static int scan_line(Scan *scan, const unsigned char *buffer, int64_t start, int64_t end,
                     Py_ssize_t max_line_bytes, int64_t now_ms, Py_ssize_t max_member_bytes) {
    int64_t line = scan->starts.count;
    int plain = end - start <= max_line_bytes && printable(buffer, start, end);
    int64_t pipe = plain ? next_pipe(buffer, start, end) : end;
    const unsigned char *found = plain ? memchr(buffer + start, ':', (size_t)(pipe - start)) : NULL;
    int64_t colon = found != NULL ? (int64_t)(found - buffer) : -1;
    plain = plain && pipe < end && colon >= 0;
    int8_t kind = NO_KIND;
    double rate = 1.0;
    int64_t timestamp_ms = now_ms;
    int64_t name_group = -1, tags_group = -1;
    if (plain) {
        int outcome = simple_line(scan, buffer, line, start, end, pipe, colon, now_ms,
                                  max_member_bytes, &kind, &rate, &timestamp_ms, &name_group,
                                  &tags_group);
        if (outcome < 0) {
            return -1;
        }
        plain = outcome;
    }
    int64_t *start_at = vec_push(&scan->starts);
    int64_t *end_at = vec_push(&scan->ends);
    uint8_t *simple_at = vec_push(&scan->simple);
    int8_t *kind_at = vec_push(&scan->kind);
    double *rate_at = vec_push(&scan->rate);
    int64_t *time_at = vec_push(&scan->timestamp_ms);
    int64_t *name_at = vec_push(&scan->name_group);
    int64_t *tags_at = vec_push(&scan->tags_group);
    int64_t *value_start_at = vec_push(&scan->value_start);
    int64_t *value_end_at = vec_push(&scan->value_end);
    if (!start_at || !end_at || !simple_at || !kind_at || !rate_at || !time_at || !name_at ||
        !tags_at || !value_start_at || !value_end_at) {
        return -1;
    }
    *start_at = start;
    *end_at = end;
    *simple_at = (uint8_t)plain;
    *kind_at = kind;
    *rate_at = rate;
    *time_at = timestamp_ms;
    *name_at = plain ? name_group : -1;
    *tags_at = plain ? tags_group : -1;
    *value_start_at = plain ? colon + 1 : -1;
    *value_end_at = plain ? pipe : -1;
    return 0;
}

static void scan_free(Scan *scan) {
    Vec *vecs[] = {&scan->starts,     &scan->ends,       &scan->simple,     &scan->kind,
                   &scan->rate,       &scan->timestamp_ms, &scan->name_group, &scan->tags_group,
                   &scan->value_start, &scan->value_end, &scan->row_line,   &scan->row_start,
                   &scan->row_end,    &scan->row_value,  &scan->row_signed, &scan->row_exact};
    for (size_t index = 0; index < sizeof(vecs) / sizeof(vecs[0]); index++) {
        free(vecs[index]->data);
    }
    interner_free(&scan->names);
    interner_free(&scan->tags);
}

static PyObject *scan(PyObject *module, PyObject *args) {
    (void)module;
    Py_buffer view;
    Py_ssize_t max_line_bytes, max_member_bytes;
    long long now_ms;
    if (!PyArg_ParseTuple(args, "y*nLn", &view, &max_line_bytes, &now_ms, &max_member_bytes)) {
        return NULL;
    }
    const unsigned char *buffer = view.buf;
    Py_ssize_t size = view.len;
    if (size > 0 && buffer[size - 1] != '\n') {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "the buffer must end with a newline");
        return NULL;
    }
    Py_ssize_t guess = size / 64 + 16;
    Scan state;
    memset(&state, 0, sizeof(state));
    PyObject *result = NULL;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    failed = vec_init(&state.starts, 8, guess) || vec_init(&state.ends, 8, guess) ||
             vec_init(&state.simple, 1, guess) || vec_init(&state.kind, 1, guess) ||
             vec_init(&state.rate, 8, guess) || vec_init(&state.timestamp_ms, 8, guess) ||
             vec_init(&state.name_group, 8, guess) || vec_init(&state.tags_group, 8, guess) ||
             vec_init(&state.value_start, 8, guess) || vec_init(&state.value_end, 8, guess) ||
             vec_init(&state.row_line, 8, guess) || vec_init(&state.row_start, 8, guess) ||
             vec_init(&state.row_end, 8, guess) || vec_init(&state.row_value, 8, guess) ||
             vec_init(&state.row_signed, 1, guess) || vec_init(&state.row_exact, 1, guess) ||
             interner_init(&state.names, buffer, guess) ||
             interner_init(&state.tags, buffer, guess);
    int64_t start = 0;
    while (!failed && start < size) {
        const unsigned char *newline = memchr(buffer + start, '\n', (size_t)(size - start));
        int64_t end = (int64_t)(newline - buffer);
        if (end > start) {
            failed = scan_line(&state, buffer, start, end, max_line_bytes, (int64_t)now_ms,
                               max_member_bytes) != 0;
        }
        start = end + 1;
    }
    Py_END_ALLOW_THREADS
    if (failed) {
        PyErr_NoMemory();
    } else {
        result = Py_BuildValue(
            "(NNNNNNNNNNNNNNNNNNNN)", vec_bytes(&state.starts), vec_bytes(&state.ends),
            vec_bytes(&state.simple), vec_bytes(&state.kind), vec_bytes(&state.rate),
            vec_bytes(&state.timestamp_ms), vec_bytes(&state.name_group),
            vec_bytes(&state.tags_group), vec_bytes(&state.value_start),
            vec_bytes(&state.value_end), vec_bytes(&state.row_line), vec_bytes(&state.row_start),
            vec_bytes(&state.row_end), vec_bytes(&state.row_value), vec_bytes(&state.row_signed),
            vec_bytes(&state.row_exact), vec_bytes(&state.names.starts),
            vec_bytes(&state.names.ends), vec_bytes(&state.tags.starts),
            vec_bytes(&state.tags.ends));
    }
    scan_free(&state);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS,
     "scan(data, max_line_bytes, now_ms, max_member_bytes) -> tuple of array bytes"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_cscan", "Compiled scan of statsd lines.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__cscan(void) { return PyModule_Create(&module); }
