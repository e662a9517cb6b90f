/* One compiled pass over a buffer of statsd lines: the structure of every line, its numbers, its
 * set member's hash, and its name and tag segments grouped by their exact bytes.
 *
 * This is the compiled twin of the numpy scanner (crdtstream/ingest/_front.py with _scan.py,
 * _numbers.py and _intern.py): it marks a line *simple* under the same rules (printable ASCII,
 * name:values|type with a known type, optional fields each one of @rate, #tags, T<seconds> at
 * most once or an ``ext:...`` extension), parses plain decimals exactly as Python's float() does
 * (at most 15 digits: an integer mantissa below 2**53 divided by an exact power of ten, one
 * correct rounding), hashes set members with crdtstream.crdt.hashing.hash64, and groups names
 * and tag lists with a hash table that compares bytes, so there are no collisions to report.
 * Everything it cannot prove simple is left for the exact per-line parser.
 *
 * scan(data, max_line_bytes, now_ms, max_member_bytes, seed) -> tuple of bytes objects, each the
 * raw native-endian contents of one array (see _front.py for their order and dtypes). ``data``
 * is a bytes object, empty or ending with a newline. The scan runs without the GIL and touches
 * no Python object.
 *
 * Hostile input: the grouping hash is keyed with ``seed`` (the caller's secret), and a lookup
 * that walks more than MAX_PROBES slots gives up: its line is left to the per-line parser, as
 * the numpy scanner does with a hash collision. Crafted names therefore cannot make the table
 * quadratic.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DIGITS 15
#define MAX_TIMESTAMP_DIGITS 12
#define MAX_PROBES 128
#define CROWDED (-3)

enum { KIND_COUNTER = 0, KIND_GAUGE = 1, KIND_DISTINCT = 2, KIND_DISTRIBUTION = 3, NO_KIND = -1 };

static const double POWERS_OF_TEN[MAX_DIGITS + 1] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
};

/* ------------------------------------------------------------------ tables of columns */

#define MAX_COLUMNS 12

/* Columns that grow together: one count and one capacity check per appended row. */
typedef struct {
    char *data[MAX_COLUMNS];
    Py_ssize_t item[MAX_COLUMNS];
    int columns;
    Py_ssize_t count;
    Py_ssize_t capacity;
} Table;

static int table_init(Table *table, const Py_ssize_t *items, int columns, Py_ssize_t capacity) {
    table->columns = columns;
    table->count = 0;
    table->capacity = capacity > 16 ? capacity : 16;
    for (int column = 0; column < columns; column++) {
        table->item[column] = items[column];
        table->data[column] = malloc((size_t)(table->capacity * items[column]));
        if (table->data[column] == NULL) {
            return -1;
        }
    }
    return 0;
}

/* Room for one more row; -1 when out of memory. */
static inline int table_reserve(Table *table) {
    if (table->count < table->capacity) {
        return 0;
    }
    Py_ssize_t capacity = table->capacity * 2;
    for (int column = 0; column < table->columns; column++) {
        char *grown = realloc(table->data[column], (size_t)(capacity * table->item[column]));
        if (grown == NULL) {
            return -1;
        }
        table->data[column] = grown;
    }
    table->capacity = capacity;
    return 0;
}

static void table_free(Table *table) {
    for (int column = 0; column < table->columns; column++) {
        free(table->data[column]);
    }
}

#define AT(table, column, type) (((type *)(table)->data[column])[(table)->count])

/* ------------------------------------------------------------------ hashing */

static inline uint64_t fmix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Eight bytes as a little-endian word, whatever the machine's byte order. */
static inline uint64_t load_le64(const unsigned char *at) {
    uint64_t word;
    memcpy(&word, at, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    word = __builtin_bswap64(word);
#endif
    return word;
}

/* The bytes of [at, at + length) from ``offset`` on, at most eight, as a little-endian word
 * (zero-padded); nothing outside the segment is read. */
static inline uint64_t word_at(const unsigned char *at, Py_ssize_t offset, Py_ssize_t length) {
    uint64_t word = 0;
    Py_ssize_t available = length - offset;
    if (available >= 8) {
        word = load_le64(at + offset);
    } else if (length >= 8) {
        /* The eight bytes ending the segment, shifted so the wanted ones come first. */
        word = load_le64(at + length - 8);
        word >>= 8 * (8 - available);
    } else {
        for (Py_ssize_t index = 0; index < available; index++) {
            word |= (uint64_t)at[offset + index] << (8 * index);
        }
    }
    return word;
}

/* crdtstream.crdt.hashing.hash64 of bytes without trailing NULs (printable text has none). */
static uint64_t hash64_bytes(const unsigned char *at, Py_ssize_t length) {
    uint64_t hash = fmix(0x5851F42D4C957F2DULL ^ (uint64_t)length);
    for (Py_ssize_t offset = 0; offset < length; offset += 8) {
        hash = fmix(hash ^ word_at(at, offset, length));
    }
    return hash;
}

/* A quick hash keyed with ``seed`` for grouping segments within one call (never leaves this
 * file); the final mix spreads every input bit over the low bits that pick a slot. */
static inline uint64_t segment_hash(const unsigned char *at, Py_ssize_t length, uint64_t seed) {
    uint64_t hash = seed ^ ((uint64_t)length * 0x9E3779B97F4A7C15ULL);
    for (Py_ssize_t offset = 0; offset < length; offset += 8) {
        hash = (hash ^ word_at(at, offset, length)) * 0xFF51AFD7ED558CCDULL;
        hash ^= hash >> 29;
    }
    return fmix(hash ^ seed);
}

/* ------------------------------------------------------------------ interning */

enum { SEGMENT_START, SEGMENT_END, SEGMENT_HASH };

/* Distinct segments of one buffer: a table of representatives (start, end, hash) and an
 * open-addressing index of their numbers (0: empty slot, else number + 1), at most half full.
 * The last segment looked up is remembered: lines of one datagram usually share their tags. */
typedef struct {
    const unsigned char *buffer;
    uint64_t seed;
    uint32_t *slots;
    uint64_t mask;
    Table segments;
    int64_t last_start, last_end, last_number;
} Interner;

static int interner_init(Interner *interner, const unsigned char *buffer, uint64_t seed) {
    static const Py_ssize_t items[] = {8, 8, 8};
    uint64_t size = 1024;
    interner->buffer = buffer;
    interner->seed = seed;
    interner->mask = size - 1;
    interner->last_number = -1;
    interner->last_start = interner->last_end = 0;
    interner->slots = calloc(size, sizeof(uint32_t));
    if (interner->slots == NULL) {
        return -1;
    }
    return table_init(&interner->segments, items, 3, 256);
}

static void interner_free(Interner *interner) {
    free(interner->slots);
    table_free(&interner->segments);
}

static int interner_grow(Interner *interner) {
    uint64_t size = (interner->mask + 1) * 2;
    uint32_t *slots = calloc(size, sizeof(uint32_t));
    if (slots == NULL) {
        return -1;
    }
    const uint64_t *hashes = (const uint64_t *)interner->segments.data[SEGMENT_HASH];
    for (Py_ssize_t number = 0; number < interner->segments.count; number++) {
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

/* The number of the segment [start, end) among the distinct ones; -2 when out of memory,
 * CROWDED when its probe sequence is longer than MAX_PROBES. */
static int64_t intern(Interner *interner, int64_t start, int64_t end) {
    const unsigned char *buffer = interner->buffer;
    Py_ssize_t length = (Py_ssize_t)(end - start);
    if (interner->last_number >= 0 && interner->last_end - interner->last_start == length &&
        memcmp(buffer + interner->last_start, buffer + start, (size_t)length) == 0) {
        return interner->last_number;
    }
    uint64_t hash = segment_hash(buffer + start, length, interner->seed);
    uint64_t slot = hash & interner->mask;
    int probes = 0;
    Table *segments = &interner->segments;
    const int64_t *starts = (const int64_t *)segments->data[SEGMENT_START];
    const int64_t *ends = (const int64_t *)segments->data[SEGMENT_END];
    const uint64_t *hashes = (const uint64_t *)segments->data[SEGMENT_HASH];
    int64_t number;
    for (;;) {
        uint32_t held = interner->slots[slot];
        if (held == 0) {
            break;
        }
        number = (int64_t)held - 1;
        if (hashes[number] == hash && ends[number] - starts[number] == length &&
            memcmp(buffer + starts[number], buffer + start, (size_t)length) == 0) {
            goto found;
        }
        if (++probes > MAX_PROBES) {
            return CROWDED;
        }
        slot = (slot + 1) & interner->mask;
    }
    if (table_reserve(segments) != 0) {
        return -2;
    }
    number = segments->count;
    AT(segments, SEGMENT_START, int64_t) = start;
    AT(segments, SEGMENT_END, int64_t) = end;
    AT(segments, SEGMENT_HASH, uint64_t) = hash;
    segments->count++;
    interner->slots[slot] = (uint32_t)(number + 1);
    if ((uint64_t)segments->count * 2 > interner->mask && interner_grow(interner) != 0) {
        return -2;
    }
found:
    interner->last_start = start;
    interner->last_end = end;
    interner->last_number = number;
    return number;
}

/* ------------------------------------------------------------------ numbers */

/* A plain decimal [+-]digits[.digits] of at most MAX_DIGITS digits, as float() reads it.
 * Returns 1 and sets *value when the text is such a number, else 0. */
static int plain_decimal(const unsigned char *at, Py_ssize_t length, int allow_sign,
                         int allow_dot, double *value) {
    Py_ssize_t index = 0;
    int negative = 0;
    if (length > 0 && allow_sign && (at[0] == '+' || at[0] == '-')) {
        negative = at[0] == '-';
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

enum {
    LINE_START, LINE_END, LINE_SIMPLE, LINE_KIND, LINE_RATE, LINE_TIME, LINE_NAME, LINE_TAGS,
    LINE_VALUE_START, LINE_VALUE_END, LINE_MEMBER_HASH, LINE_COLUMNS
};
enum { ROW_LINE, ROW_START, ROW_END, ROW_VALUE, ROW_SIGNED, ROW_EXACT, ROW_COLUMNS };

typedef struct {
    Table lines, rows;
    Interner names, tags;
} Scan;

/* What a structurally simple line holds, filled by simple_line. */
typedef struct {
    int8_t kind;
    double rate;
    int64_t timestamp_ms;
    int64_t name, tags;
    uint64_t member_hash;
} Facts;

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

static inline int64_t next_of(const unsigned char *buffer, int byte, int64_t from, int64_t end) {
    const unsigned char *found = memchr(buffer + from, byte, (size_t)(end - from));
    return found != NULL ? (int64_t)(found - buffer) : end;
}

/* The optional fields after the type: 1 when all are well-formed (rate and time read into
 * ``facts``, the tags' bounds into ``tags``), else 0. */
static int optional_fields(const unsigned char *buffer, int64_t pipe, int64_t end, Facts *facts,
                           int64_t *tags_start, int64_t *tags_end) {
    int seen_rate = 0, seen_time = 0;
    while (pipe < end) {
        int64_t field_start = pipe + 1;
        int64_t field_end = next_of(buffer, '|', field_start, end);
        pipe = field_end;
        if (field_end <= field_start) {
            return 0;
        }
        const unsigned char *text = buffer + field_start + 1;
        Py_ssize_t length = (Py_ssize_t)(field_end - field_start - 1);
        unsigned char marker = buffer[field_start];
        if (marker == '@') {
            if (seen_rate++ || !plain_decimal(text, length, 1, 1, &facts->rate) ||
                !(facts->rate > 0.0 && facts->rate <= 1.0)) {
                return 0;
            }
        } else if (marker == '#') {
            if (*tags_start >= 0) {
                return 0;
            }
            *tags_start = field_start + 1;
            *tags_end = field_end;
        } else if (marker == 'T') {
            double seconds;
            if (seen_time++ || length > MAX_TIMESTAMP_DIGITS ||
                !plain_decimal(text, length, 0, 0, &seconds)) {
                return 0;
            }
            facts->timestamp_ms = (int64_t)seconds * 1000;
        } else if (marker >= 'a' && marker <= 'z') {
            if (memchr(buffer + field_start, ':', (size_t)(field_end - field_start)) == NULL) {
                return 0;
            }
        } else {
            return 0;
        }
    }
    return 1;
}

/* Appends the value rows of a numeric line; -1 when out of memory. */
static int value_rows(Table *rows, const unsigned char *buffer, int64_t line, int64_t piece,
                      int64_t value_end) {
    while (piece <= value_end) {
        int64_t piece_end = next_of(buffer, ':', piece, value_end);
        if (table_reserve(rows) != 0) {
            return -1;
        }
        double value = 0.0;
        Py_ssize_t length = (Py_ssize_t)(piece_end - piece);
        AT(rows, ROW_EXACT, uint8_t) = (uint8_t)plain_decimal(buffer + piece, length, 1, 1, &value);
        AT(rows, ROW_LINE, int64_t) = line;
        AT(rows, ROW_START, int64_t) = piece;
        AT(rows, ROW_END, int64_t) = piece_end;
        AT(rows, ROW_VALUE, double) = value;
        AT(rows, ROW_SIGNED, uint8_t) =
            (uint8_t)(length > 0 && (buffer[piece] == '+' || buffer[piece] == '-'));
        rows->count++;
        piece = piece_end + 1;
    }
    return 0;
}

/* Fills ``facts`` for a line whose head is ``name:values|``; returns 1 when the line is simple,
 * 0 when it is not, -1 when out of memory. */
static int simple_line(Scan *scan, const unsigned char *buffer, int64_t line, int64_t start,
                       int64_t end, int64_t colon, int64_t value_end,
                       Py_ssize_t max_member_bytes, Facts *facts) {
    int64_t type_end = next_of(buffer, '|', value_end + 1, end);
    facts->kind = type_kind(buffer + value_end + 1, (Py_ssize_t)(type_end - value_end - 1));
    if (facts->kind == NO_KIND) {
        return 0;
    }
    int64_t tags_start = -1, tags_end = -1;
    if (!optional_fields(buffer, type_end, end, facts, &tags_start, &tags_end)) {
        return 0;
    }
    if (facts->kind == KIND_DISTINCT) {
        int64_t member_bytes = value_end - colon - 1;
        if (member_bytes <= 0 || member_bytes > max_member_bytes) {
            return 0;
        }
        facts->member_hash = hash64_bytes(buffer + colon + 1, (Py_ssize_t)member_bytes);
    } else if (value_rows(&scan->rows, buffer, line, colon + 1, value_end) != 0) {
        return -1;
    }
    facts->name = intern(&scan->names, start, colon);
    facts->tags = tags_start >= 0 ? intern(&scan->tags, tags_start, tags_end) : -1;
    if (facts->name == -2 || facts->tags == -2) {
        return -1;
    }
    return facts->name != CROWDED && facts->tags != CROWDED;
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
    Table *lines = &scan->lines;
    if (table_reserve(lines) != 0) {
        return -1;
    }
    int64_t line = lines->count;
    Facts facts = {NO_KIND, 1.0, now_ms, -1, -1, 0};
    int64_t pipe = -1, colon = -1;
    int simple = end - start <= max_line_bytes && printable(buffer, start, end);
    if (simple) {
        pipe = next_of(buffer, '|', start, end);
        colon = next_of(buffer, ':', start, pipe);
        simple = pipe < end && colon < pipe;
    }
    if (simple) {
        simple = simple_line(scan, buffer, line, start, end, colon, pipe, max_member_bytes,
                             &facts);
        if (simple < 0) {
            return -1;
        }
    }
    AT(lines, LINE_START, int64_t) = start;
    AT(lines, LINE_END, int64_t) = end;
    AT(lines, LINE_SIMPLE, uint8_t) = (uint8_t)simple;
    AT(lines, LINE_KIND, int8_t) = facts.kind;
    AT(lines, LINE_RATE, double) = facts.rate;
    AT(lines, LINE_TIME, int64_t) = facts.timestamp_ms;
    AT(lines, LINE_NAME, int64_t) = simple ? facts.name : -1;
    AT(lines, LINE_TAGS, int64_t) = simple ? facts.tags : -1;
    AT(lines, LINE_VALUE_START, int64_t) = simple ? colon + 1 : -1;
    AT(lines, LINE_VALUE_END, int64_t) = simple ? pipe : -1;
    AT(lines, LINE_MEMBER_HASH, uint64_t) = facts.member_hash;
    lines->count++;
    return 0;
}

static void scan_free(Scan *scan) {
    table_free(&scan->lines);
    table_free(&scan->rows);
    interner_free(&scan->names);
    interner_free(&scan->tags);
}

static int scan_buffer(Scan *scan, const unsigned char *buffer, Py_ssize_t size,
                       Py_ssize_t max_line_bytes, int64_t now_ms, Py_ssize_t max_member_bytes,
                       uint64_t seed) {
    static const Py_ssize_t line_items[LINE_COLUMNS] = {8, 8, 1, 1, 8, 8, 8, 8, 8, 8, 8};
    static const Py_ssize_t row_items[ROW_COLUMNS] = {8, 8, 8, 8, 1, 1};
    Py_ssize_t guess = size / 64 + 16;
    if (table_init(&scan->lines, line_items, LINE_COLUMNS, guess) != 0 ||
        table_init(&scan->rows, row_items, ROW_COLUMNS, guess) != 0 ||
        interner_init(&scan->names, buffer, seed) != 0 ||
        interner_init(&scan->tags, buffer, seed ^ 0x6A09E667F3BCC909ULL) != 0) {
        return -1;
    }
    int64_t start = 0;
    while (start < size) {
        int64_t end = next_of(buffer, '\n', start, size);
        if (end > start &&
            scan_line(scan, buffer, start, end, max_line_bytes, now_ms, max_member_bytes) != 0) {
            return -1;
        }
        start = end + 1;
    }
    return 0;
}

/* Appends each column of ``table`` (from ``first``) to ``result`` as a bytes object. */
static int put_columns(PyObject *result, Py_ssize_t *at, const Table *table, int first,
                       int count) {
    for (int column = first; column < first + count; column++) {
        PyObject *bytes = PyBytes_FromStringAndSize(table->data[column],
                                                    table->count * table->item[column]);
        if (bytes == NULL) {
            return -1;
        }
        PyTuple_SET_ITEM(result, (*at)++, bytes);
    }
    return 0;
}

static PyObject *scan(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *data;
    Py_ssize_t max_line_bytes, max_member_bytes;
    long long now_ms;
    unsigned long long seed;
    /* bytes only: the GIL is released while scanning, so the buffer must be immutable. */
    if (!PyArg_ParseTuple(args, "SnLnK", &data, &max_line_bytes, &now_ms, &max_member_bytes,
                          &seed)) {
        return NULL;
    }
    const unsigned char *buffer = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    if (size > 0 && buffer[size - 1] != '\n') {
        PyErr_SetString(PyExc_ValueError, "the buffer must end with a newline");
        return NULL;
    }
    Scan state;
    memset(&state, 0, sizeof(state));
    int failed;
    Py_BEGIN_ALLOW_THREADS
    failed = scan_buffer(&state, buffer, size, max_line_bytes, (int64_t)now_ms,
                         max_member_bytes, (uint64_t)seed);
    Py_END_ALLOW_THREADS
    PyObject *result = NULL;
    if (failed) {
        PyErr_NoMemory();
    } else {
        result = PyTuple_New(LINE_COLUMNS + ROW_COLUMNS + 4);
        Py_ssize_t at = 0;
        if (result != NULL &&
            (put_columns(result, &at, &state.lines, 0, LINE_COLUMNS) != 0 ||
             put_columns(result, &at, &state.rows, 0, ROW_COLUMNS) != 0 ||
             put_columns(result, &at, &state.names.segments, SEGMENT_START, 2) != 0 ||
             put_columns(result, &at, &state.tags.segments, SEGMENT_START, 2) != 0)) {
            Py_CLEAR(result);
        }
    }
    scan_free(&state);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS,
     "scan(data, max_line_bytes, now_ms, max_member_bytes, seed) -> tuple of array bytes"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_cscan", "Compiled scan of statsd lines.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__cscan(void) {
    PyObject *created = PyModule_Create(&module);
    if (created == NULL) {
        return NULL;
    }
    /* The limits this file shares with the Python parsers (a test checks they agree). */
    if (PyModule_AddIntConstant(created, "MAX_DIGITS", MAX_DIGITS) != 0 ||
        PyModule_AddIntConstant(created, "MAX_TIMESTAMP_DIGITS", MAX_TIMESTAMP_DIGITS) != 0) {
        Py_DECREF(created);
        return NULL;
    }
    return created;
}
