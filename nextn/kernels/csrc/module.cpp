// nextn.kernels._native: the Python face of the kernels.
//
//   op_names() -> tuple of names; an op's id is its index
//   call(op, ints, floats)          run one op now (eager)
//   plan_new() -> handle; plan_add(handle, op, ints, floats); plan_run(handle); plan_free(handle)
//                                   record ops once, replay them all in one call (a captured step)
//   isa(), set_threads(n), threads(), set_spin(us)
//
// Pointers travel as Python ints (tensor.data_ptr()). The instruction set is chosen once, at import:
// the widest the CPU supports, or NEXTN_ISA=avx512|avx2|generic.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ops.h"
#include "pool.h"

namespace {

nx::OpFn table[nx::OP_COUNT];
const char* isa_name = "generic";
const char* op_names[] = {
#define NX_NAME(name) #name,
    NX_OPS(NX_NAME)
#undef NX_NAME
};

struct Step {
    nx::OpFn fn;
    nx::Args args;
};
std::vector<std::vector<Step>*> plans;

bool parse_args(PyObject* ints, PyObject* floats, nx::Args& a) {
    std::memset(&a, 0, sizeof a);
    PyObject* fi = PySequence_Fast(ints, "ints must be a sequence");
    if (!fi) return false;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fi);
    if (n > (Py_ssize_t)(sizeof a.i / sizeof a.i[0])) {
        Py_DECREF(fi);
        PyErr_SetString(PyExc_ValueError, "too many int arguments");
        return false;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        a.i[k] = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(fi, k));
        if (a.i[k] == -1 && PyErr_Occurred()) { Py_DECREF(fi); return false; }
    }
    Py_DECREF(fi);
    PyObject* ff = PySequence_Fast(floats, "floats must be a sequence");
    if (!ff) return false;
    n = PySequence_Fast_GET_SIZE(ff);
    if (n > (Py_ssize_t)(sizeof a.f / sizeof a.f[0])) {
        Py_DECREF(ff);
        PyErr_SetString(PyExc_ValueError, "too many float arguments");
        return false;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        a.f[k] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(ff, k));
        if (a.f[k] == -1.0 && PyErr_Occurred()) { Py_DECREF(ff); return false; }
    }
    Py_DECREF(ff);
    return true;
}

bool op_of(long op, nx::OpFn& fn) {
    if (op < 0 || op >= nx::OP_COUNT) {
        PyErr_SetString(PyExc_ValueError, "unknown op id");
        return false;
    }
    fn = table[op];
    return true;
}

std::vector<Step>* plan_of(long h) {
    if (h < 0 || h >= (long)plans.size() || !plans[h]) {
        PyErr_SetString(PyExc_ValueError, "unknown plan handle");
        return nullptr;
    }
    return plans[h];
}

PyObject* py_call(PyObject*, PyObject* args) {
    long op;
    PyObject *ints, *floats;
    if (!PyArg_ParseTuple(args, "lOO", &op, &ints, &floats)) return nullptr;
    nx::OpFn fn;
    nx::Args a;
    if (!op_of(op, fn) || !parse_args(ints, floats, a)) return nullptr;
    Py_BEGIN_ALLOW_THREADS
    fn(a);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyObject* py_plan_new(PyObject*, PyObject*) {
    plans.push_back(new std::vector<Step>());
    return PyLong_FromLong((long)plans.size() - 1);
}

PyObject* py_plan_add(PyObject*, PyObject* args) {
    long h, op;
    PyObject *ints, *floats;
    if (!PyArg_ParseTuple(args, "llOO", &h, &op, &ints, &floats)) return nullptr;
    std::vector<Step>* plan = plan_of(h);
    Step s;
    if (!plan || !op_of(op, s.fn) || !parse_args(ints, floats, s.args)) return nullptr;
    plan->push_back(s);
    return PyLong_FromSsize_t((Py_ssize_t)plan->size());
}

PyObject* py_plan_run(PyObject*, PyObject* args) {
    long h;
    if (!PyArg_ParseTuple(args, "l", &h)) return nullptr;
    std::vector<Step>* plan = plan_of(h);
    if (!plan) return nullptr;
    Py_BEGIN_ALLOW_THREADS
    for (const Step& s : *plan) s.fn(s.args);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyObject* py_plan_profile(PyObject*, PyObject* args) {   // run once, timing each op: [(op id, seconds)]
    long h;
    if (!PyArg_ParseTuple(args, "l", &h)) return nullptr;
    std::vector<Step>* plan = plan_of(h);
    if (!plan) return nullptr;
    std::vector<double> t(plan->size());
    Py_BEGIN_ALLOW_THREADS
    for (size_t k = 0; k < plan->size(); k++) {
        auto t0 = std::chrono::steady_clock::now();
        (*plan)[k].fn((*plan)[k].args);
        t[k] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    Py_END_ALLOW_THREADS
    PyObject* out = PyList_New((Py_ssize_t)plan->size());
    for (size_t k = 0; k < plan->size(); k++) {
        long op = 0;
        for (int o = 0; o < nx::OP_COUNT; o++) if (table[o] == (*plan)[k].fn) op = o;
        PyList_SET_ITEM(out, (Py_ssize_t)k, Py_BuildValue("(ld)", op, t[k]));
    }
    return out;
}

PyObject* py_plan_free(PyObject*, PyObject* args) {
    long h;
    if (!PyArg_ParseTuple(args, "l", &h)) return nullptr;
    if (plan_of(h)) { delete plans[h]; plans[h] = nullptr; }
    PyErr_Clear();
    Py_RETURN_NONE;
}

PyObject* py_op_names(PyObject*, PyObject*) {
    PyObject* t = PyTuple_New(nx::OP_COUNT);
    for (int k = 0; k < nx::OP_COUNT; k++) PyTuple_SET_ITEM(t, k, PyUnicode_FromString(op_names[k]));
    return t;
}

PyObject* py_isa(PyObject*, PyObject*) { return PyUnicode_FromString(isa_name); }

PyObject* py_set_threads(PyObject*, PyObject* args) {
    int n;
    if (!PyArg_ParseTuple(args, "i", &n)) return nullptr;
    Py_BEGIN_ALLOW_THREADS
    nx::pool_set_threads(n);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyObject* py_set_spin(PyObject*, PyObject* args) {
    int us;
    if (!PyArg_ParseTuple(args, "i", &us)) return nullptr;
    nx::pool_set_spin(us);
    Py_RETURN_NONE;
}

PyObject* py_threads(PyObject*, PyObject*) { return PyLong_FromLong(nx::pool_threads()); }

PyMethodDef methods[] = {
    {"call", py_call, METH_VARARGS, "call(op, ints, floats): run one op"},
    {"plan_new", py_plan_new, METH_NOARGS, "a new, empty plan"},
    {"plan_add", py_plan_add, METH_VARARGS, "plan_add(handle, op, ints, floats): record an op"},
    {"plan_run", py_plan_run, METH_VARARGS, "plan_run(handle): run every recorded op in order"},
    {"plan_free", py_plan_free, METH_VARARGS, "plan_free(handle)"},
    {"plan_profile", py_plan_profile, METH_VARARGS, "plan_profile(handle): run once, [(op id, seconds)] per op"},
    {"op_names", py_op_names, METH_NOARGS, "the op names, in id order"},
    {"isa", py_isa, METH_NOARGS, "the instruction set the kernels run with"},
    {"set_threads", py_set_threads, METH_VARARGS, "set_threads(n): threads the kernels use"},
    {"threads", py_threads, METH_NOARGS, "threads the kernels use"},
    {"set_spin", py_set_spin, METH_VARARGS, "set_spin(us): how long idle workers spin before sleeping"},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", "nextn's native CPU kernels", -1, methods};

bool choose_isa() {
    const char* want = std::getenv("NEXTN_ISA");
    std::string w = want ? want : "";
    struct { const char* name; bool (*ok)(); void (*fill)(nx::OpFn*); } isas[] = {
        {"avx512", avx512::supported, avx512::fill_table},
        {"avx2", avx2::supported, avx2::fill_table},
        {"generic", generic::supported, generic::fill_table},
    };
    for (auto& i : isas) {
        if ((!w.empty() && w != i.name) || !i.ok()) continue;
        i.fill(table);
        isa_name = i.name;
        return true;
    }
    PyErr_Format(PyExc_ImportError, "NEXTN_ISA=%s: not one of avx512, avx2, generic, or not supported by this CPU", want);
    return false;
}

}  // namespace

PyMODINIT_FUNC PyInit__native(void) {
    if (!choose_isa()) return nullptr;
    return PyModule_Create(&module);
}
