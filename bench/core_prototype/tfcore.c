/* The core-module prototype of the tenantflow guest: CPython for WASI embedded in a plain core wasm module.
 *
 * Not the production guest (that is guest/, built by componentize-py). This module is pre-initialized with
 * Wizer: `wizer.initialize` starts the interpreter and imports the harness (tfcore_app.py, the author SDK and
 * the stdlib modules tenants use), and Wizer snapshots linear memory, so an instance starts with all of that
 * done.
 *
 * Host interface: the same roles as the WIT world's `host` (step-begin, step-complete, sleep, wait-for-event,
 * log), as core imports of module "tenantflow" taking pointers and lengths into linear memory. Strings are
 * UTF-8. A call that answers text gets a reply buffer (out, cap) and returns the answer's length; when the
 * answer is longer than cap, the guest allocates that many bytes and collects it with `take`.
 *
 * Exports: tf_alloc/tf_free (the host writes the source and event into guest memory), tf_run (compile and run
 * a workflow; the result is handed to the `output` import), tf_check (compile a workflow version once: its
 * marshalled code object to `output`), tf_run_compiled (run with that code instead of compiling the source),
 * tf_resume (send a value into a workflow suspended at an export boundary: see tfcore_app.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define IMPORT(name) __attribute__((import_module("tenantflow"), import_name(name)))
#define EXPORT(name) __attribute__((export_name(name)))

IMPORT("step_begin")
int32_t host_step_begin(const char *name, int32_t name_len, const char *cfg, int32_t cfg_len, char *out,
                        int32_t cap);
IMPORT("step_complete")
int32_t host_step_complete(const char *name, int32_t name_len, const char *outcome, int32_t outcome_len, char *out,
                           int32_t cap);
IMPORT("sleep") int32_t host_sleep(const char *name, int32_t name_len, int64_t duration_ms);
IMPORT("wait_for_event")
int32_t host_wait_for_event(const char *name, int32_t name_len, const char *type, int32_t type_len,
                            int64_t timeout_ms, char *out, int32_t cap);
IMPORT("log") void host_log(int32_t fd, const char *text, int32_t len);
IMPORT("take") void host_take(char *out);
IMPORT("output") void host_output(int32_t status, const char *text, int32_t len);

extern void __wasm_call_ctors(void);

static char reply[16384];
static PyObject *app_run;
static PyObject *app_run_compiled;
static PyObject *app_check;
static PyObject *app_resume;

/* The host's answer as a Python str: from the reply buffer, or collected with `take` when it did not fit. */
static PyObject *answer(int32_t n) {
    if (n < 0) {
        PyErr_SetString(PyExc_RuntimeError, "the host refused the call");
        return NULL;
    }
    if (n <= (int32_t)sizeof(reply)) return PyUnicode_DecodeUTF8(reply, n, "strict");
    char *big = malloc((size_t)n);
    if (big == NULL) return PyErr_NoMemory();
    host_take(big);
    PyObject *text = PyUnicode_DecodeUTF8(big, n, "strict");
    free(big);
    return text;
}

static PyObject *py_step_begin(PyObject *self, PyObject *args) {
    const char *name, *cfg;
    Py_ssize_t name_len, cfg_len;
    if (!PyArg_ParseTuple(args, "s#s#", &name, &name_len, &cfg, &cfg_len)) return NULL;
    return answer(host_step_begin(name, (int32_t)name_len, cfg, (int32_t)cfg_len, reply, sizeof(reply)));
}

static PyObject *py_step_complete(PyObject *self, PyObject *args) {
    const char *name, *outcome;
    Py_ssize_t name_len, outcome_len;
    if (!PyArg_ParseTuple(args, "s#s#", &name, &name_len, &outcome, &outcome_len)) return NULL;
    return answer(
        host_step_complete(name, (int32_t)name_len, outcome, (int32_t)outcome_len, reply, sizeof(reply)));
}

static PyObject *py_sleep(PyObject *self, PyObject *args) {
    const char *name;
    Py_ssize_t name_len;
    long long ms;
    if (!PyArg_ParseTuple(args, "s#L", &name, &name_len, &ms)) return NULL;
    return PyBool_FromLong(host_sleep(name, (int32_t)name_len, (int64_t)ms));
}

static PyObject *py_wait_for_event(PyObject *self, PyObject *args) {
    const char *name, *type;
    Py_ssize_t name_len, type_len;
    long long timeout;
    if (!PyArg_ParseTuple(args, "s#s#L", &name, &name_len, &type, &type_len, &timeout)) return NULL;
    return answer(host_wait_for_event(name, (int32_t)name_len, type, (int32_t)type_len, (int64_t)timeout, reply,
                                      sizeof(reply)));
}

static PyObject *py_log(PyObject *self, PyObject *args) {
    int fd;
    const char *text;
    Py_ssize_t len;
    if (!PyArg_ParseTuple(args, "is#", &fd, &text, &len)) return NULL;
    host_log(fd, text, (int32_t)len);
    Py_RETURN_NONE;
}

static PyMethodDef host_methods[] = {
    {"step_begin", py_step_begin, METH_VARARGS, "step-begin(name, config) -> plan text"},
    {"step_complete", py_step_complete, METH_VARARGS, "step-complete(name, outcome text) -> plan text"},
    {"sleep", py_sleep, METH_VARARGS, "sleep(name, duration_ms) -> bool"},
    {"wait_for_event", py_wait_for_event, METH_VARARGS, "wait-for-event(name, type, timeout_ms|-1) -> text"},
    {"log", py_log, METH_VARARGS, "log(fd, text)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef host_module = {PyModuleDef_HEAD_INIT, "_tfhost", NULL, -1, host_methods};

static PyObject *init_host_module(void) { return PyModule_Create(&host_module); }

static void fail(const char *what) {
    fprintf(stderr, "tfcore: %s\n", what);
    if (PyErr_Occurred()) PyErr_Print();
    abort();
}

EXPORT("wizer.initialize") void tf_initialize(void) {
    __wasm_call_ctors();
    if (PyImport_AppendInittab("_tfhost", init_host_module) < 0) fail("inittab");
    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    config.site_import = 0;
    config.write_bytecode = 0;
    config.install_signal_handlers = 0;
    config.pathconfig_warnings = 0;
    config.module_search_paths_set = 1;
    if (PyStatus_Exception(PyConfig_SetString(&config, &config.home, L"/lib"))) fail("home");
    if (PyStatus_Exception(PyWideStringList_Append(&config.module_search_paths, L"/lib/python3.11"))) fail("path");
    if (PyStatus_Exception(PyWideStringList_Append(&config.module_search_paths, L"/app"))) fail("path");
    PyStatus status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status)) fail(status.err_msg ? status.err_msg : "Py_InitializeFromConfig");
    PyObject *app = PyImport_ImportModule("tfcore_app");
    if (app == NULL) fail("import tfcore_app");
    app_run = PyObject_GetAttrString(app, "run");
    app_run_compiled = PyObject_GetAttrString(app, "run_compiled");
    app_check = PyObject_GetAttrString(app, "check");
    app_resume = PyObject_GetAttrString(app, "resume");
    if (app_run == NULL || app_run_compiled == NULL || app_check == NULL || app_resume == NULL)
        fail("tfcore_app.run/run_compiled/check/resume");
    /* Collect what the imports left behind, so the snapshot carries no garbage. */
    PyGC_Collect();
}

EXPORT("tf_alloc") void *tf_alloc(int32_t size) { return malloc(size > 0 ? (size_t)size : 1); }

EXPORT("tf_free") void tf_free(void *p) { free(p); }

/* Calls the harness; it answers (status, text): 0 done (JSON result), 1 failed (JSON error), 2 suspended, or
 * (3, bytes): the marshalled code `check` compiled. */
static int32_t deliver(PyObject *answer_tuple) {
    if (answer_tuple == NULL) {
        PyErr_Print();
        static const char msg[] = "{\"name\": \"GuestError\", \"message\": \"the harness raised\"}";
        host_output(1, msg, sizeof(msg) - 1);
        return 1;
    }
    long status = PyLong_AsLong(PyTuple_GET_ITEM(answer_tuple, 0));
    PyObject *body = PyTuple_GET_ITEM(answer_tuple, 1);
    Py_ssize_t len;
    char *text;
    if (PyBytes_Check(body)) {
        PyBytes_AsStringAndSize(body, &text, &len);
    } else {
        text = (char *)PyUnicode_AsUTF8AndSize(body, &len);
    }
    host_output((int32_t)status, text, (int32_t)len);
    Py_DECREF(answer_tuple);
    return (int32_t)status;
}

EXPORT("tf_run") int32_t tf_run(const char *src, int32_t src_len, const char *event, int32_t event_len) {
    PyObject *source = PyUnicode_DecodeUTF8(src, src_len, "strict");
    PyObject *ev = PyUnicode_DecodeUTF8(event, event_len, "strict");
    PyObject *result = NULL;
    if (source != NULL && ev != NULL) result = PyObject_CallFunctionObjArgs(app_run, source, ev, NULL);
    Py_XDECREF(source);
    Py_XDECREF(ev);
    return deliver(result);
}

/* Compiles the source, runs its module once and checks it defines a workflow; the marshalled code object goes to
 * `output` with status 3 (component guest: `check`). Called once per workflow version. */
EXPORT("tf_check") int32_t tf_check(const char *src, int32_t src_len) {
    PyObject *source = PyUnicode_DecodeUTF8(src, src_len, "strict");
    PyObject *result = NULL;
    if (source != NULL) result = PyObject_CallFunctionObjArgs(app_check, source, NULL);
    Py_XDECREF(source);
    return deliver(result);
}

/* tf_run with the code tf_check made: loaded (marshal) and run, not compiled (component guest: `run-compiled`). */
EXPORT("tf_run_compiled")
int32_t tf_run_compiled(const char *src, int32_t src_len, const char *code, int32_t code_len, const char *event,
                        int32_t event_len) {
    PyObject *source = PyUnicode_DecodeUTF8(src, src_len, "strict");
    PyObject *marshalled = PyBytes_FromStringAndSize(code, code_len);
    PyObject *ev = PyUnicode_DecodeUTF8(event, event_len, "strict");
    PyObject *result = NULL;
    if (source != NULL && marshalled != NULL && ev != NULL)
        result = PyObject_CallFunctionObjArgs(app_run_compiled, source, marshalled, ev, NULL);
    Py_XDECREF(source);
    Py_XDECREF(marshalled);
    Py_XDECREF(ev);
    return deliver(result);
}

EXPORT("tf_resume") int32_t tf_resume(const char *value, int32_t value_len) {
    PyObject *text = PyUnicode_DecodeUTF8(value, value_len, "strict");
    PyObject *result = NULL;
    if (text != NULL) result = PyObject_CallFunctionObjArgs(app_resume, text, NULL);
    Py_XDECREF(text);
    return deliver(result);
}
