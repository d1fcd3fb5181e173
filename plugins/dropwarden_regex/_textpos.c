/* The regex detector's offset arithmetic in C: characters and newlines counted over a range of a view.
 *
 * Both functions do what the pure-Python fallbacks in textpos.py do, without building the decoded
 * slice: utf8_char_count(data, start, end) == len(data[start:end].decode("utf-8", "surrogatepass")) for
 * a range of whole characters of valid UTF-8, and newline_count(text, start, end) == text.count("\n",
 * start, end) for a str or bytes object. Offsets are clamped to the object as slicing clamps them;
 * negative offsets are refused (the callers never pass one).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static int
range_of(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t length, Py_ssize_t *start, Py_ssize_t *end)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "expected (object, start, end)");
        return -1;
    }
    *start = PyLong_AsSsize_t(args[1]);
    if (*start == -1 && PyErr_Occurred()) return -1;
    *end = PyLong_AsSsize_t(args[2]);
    if (*end == -1 && PyErr_Occurred()) return -1;
    if (*start < 0 || *end < 0) {
        PyErr_SetString(PyExc_ValueError, "negative offset");
        return -1;
    }
    if (*end > length) *end = length;
    if (*start > *end) *start = *end;
    return 0;
}

/* Bytes are counted eight at a time (SWAR): a lane function sets 1 in each byte lane that matches,
 * and the lanes are summed in an accumulator of byte lanes that is emptied before one can overflow. */
#define BYTE_LANES 0x0101010101010101ULL
#define HIGH_BITS 0x8080808080808080ULL
#define LOW_7_BITS 0x7F7F7F7F7F7F7F7FULL
#define U16_LANES 0x0001000100010001ULL

static inline uint64_t
load64(const unsigned char *p)
{
    uint64_t word;
    memcpy(&word, p, sizeof word);
    return word;
}

/* The sum of the eight byte lanes of `lanes` (each at most 255). */
static inline Py_ssize_t
sum_byte_lanes(uint64_t lanes)
{
    uint64_t pairs = (lanes & 0x00FF00FF00FF00FFULL) + ((lanes >> 8) & 0x00FF00FF00FF00FFULL);
    return (Py_ssize_t)((pairs * U16_LANES) >> 48);
}

/* Bytes of p[0:n] for which `lane_matches` sets the lane's low bit. */
#define COUNT_BYTE_LANES(p, n, lane_matches, scalar_matches)           \
    do {                                                               \
        Py_ssize_t i_ = 0;                                             \
        while (i_ + 8 <= (n)) {                                        \
            uint64_t acc_ = 0;                                         \
            for (int k_ = 0; k_ < 255 && i_ + 8 <= (n); k_++, i_ += 8) { \
                uint64_t w_ = load64((p) + i_);                        \
                acc_ += lane_matches(w_);                              \
            }                                                          \
            count += sum_byte_lanes(acc_);                             \
        }                                                              \
        for (; i_ < (n); i_++) count += scalar_matches((p)[i_]);       \
    } while (0)

/* 1 in each byte lane holding a continuation byte (10xxxxxx): bit 7 set, bit 6 clear. */
#define CONTINUATION_LANES(w) ((((w) & ~((w) << 1)) & HIGH_BITS) >> 7)
#define IS_CONTINUATION(b) (((b) & 0xC0) == 0x80)
#define IS_NEWLINE(b) ((b) == '\n')

/* 1 in each byte lane equal to '\n' (exact: no carry crosses lanes). */
static inline uint64_t
newline_byte_lanes(uint64_t word)
{
    uint64_t x = word ^ (BYTE_LANES * '\n');
    uint64_t nonzero = ((x & LOW_7_BITS) + LOW_7_BITS) | x;
    return (~nonzero & HIGH_BITS) >> 7;
}

/* A character begins at every byte that is not a continuation byte. */
static PyObject *
utf8_char_count(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "utf8_char_count() needs bytes");
        return NULL;
    }
    Py_ssize_t start, end, count = 0;
    if (range_of(args, nargs, PyBytes_GET_SIZE(args[0]), &start, &end) < 0) return NULL;
    const unsigned char *bytes = (const unsigned char *)PyBytes_AS_STRING(args[0]) + start;
    COUNT_BYTE_LANES(bytes, end - start, CONTINUATION_LANES, IS_CONTINUATION);
    return PyLong_FromSsize_t(end - start - count);
}

/* '\n' in 16-bit units: blocks of at most 65535 counted in a 16-bit sum, a loop the compiler
 * vectorises. */
static Py_ssize_t
ucs2_newlines(const Py_UCS2 *units, Py_ssize_t n)
{
    Py_ssize_t count = 0;
    for (Py_ssize_t i = 0; i < n;) {
        Py_ssize_t stop = n - i > 65535 ? i + 65535 : n;
        uint16_t block = 0;
        for (; i < stop; i++) block += units[i] == '\n';
        count += block;
    }
    return count;
}

static PyObject *
newline_count(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "expected (object, start, end)");
        return NULL;
    }
    PyObject *text = args[0];
    Py_ssize_t start, end, count = 0;
    if (PyUnicode_Check(text)) {
#if PY_VERSION_HEX < 0x030C0000
        if (PyUnicode_READY(text) < 0) return NULL; /* a no-op, and deprecated, from 3.12 on */
#endif
        if (range_of(args, nargs, PyUnicode_GET_LENGTH(text), &start, &end) < 0) return NULL;
        const void *data = PyUnicode_DATA(text);
        switch (PyUnicode_KIND(text)) {
        case PyUnicode_1BYTE_KIND:
            COUNT_BYTE_LANES((const Py_UCS1 *)data + start, end - start, newline_byte_lanes, IS_NEWLINE);
            break;
        case PyUnicode_2BYTE_KIND:
            count = ucs2_newlines((const Py_UCS2 *)data + start, end - start);
            break;
        default:
            for (Py_ssize_t i = start; i < end; i++) count += ((const Py_UCS4 *)data)[i] == '\n';
            break;
        }
    } else if (PyBytes_Check(text)) {
        if (range_of(args, nargs, PyBytes_GET_SIZE(text), &start, &end) < 0) return NULL;
        const unsigned char *bytes = (const unsigned char *)PyBytes_AS_STRING(text) + start;
        COUNT_BYTE_LANES(bytes, end - start, newline_byte_lanes, IS_NEWLINE);
    } else {
        PyErr_SetString(PyExc_TypeError, "newline_count() needs str or bytes");
        return NULL;
    }
    return PyLong_FromSsize_t(count);
}

static PyMethodDef methods[] = {
    {"utf8_char_count", (PyCFunction)(void (*)(void))utf8_char_count, METH_FASTCALL,
     "utf8_char_count(data, start, end): the characters that begin in data[start:end]"},
    {"newline_count", (PyCFunction)(void (*)(void))newline_count, METH_FASTCALL,
     "newline_count(text, start, end): text.count('\\n', start, end) for str or bytes"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_textpos", "Offset arithmetic of the regex detector, in C.", -1, methods,
};

PyMODINIT_FUNC
PyInit__textpos(void)
{
    return PyModule_Create(&module);
}
