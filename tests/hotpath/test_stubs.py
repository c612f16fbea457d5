"""The .pyi stubs of the compiled modules say what the built modules have:
the same public names, methods with the same parameters and defaults, and
properties where the module has attributes (read-only ones as @property,
writable ones as annotated attributes)."""
import ast
import inspect
import re
from pathlib import Path

import pytest

import ingest.hotpath._buffer as compiled_buffer
import ingest.hotpath._encoder as compiled_encoder

MODULES = {"_buffer": compiled_buffer, "_encoder": compiled_encoder}

# objects of each stubbed class to try attribute writes on (None: no public way to make one)
INSTANCES = {
    "BatchBuffer": lambda: compiled_buffer.BatchBuffer(),
    "SealedBatch": lambda: compiled_buffer.BatchBuffer().seal(),
    "LineFramer": lambda: compiled_buffer.LineFramer(),
    "_Lines": lambda: compiled_buffer.BatchBuffer(),
    "Encoder": lambda: compiled_encoder.Encoder("t"),
}  # ArrowBuffer is made only inside the encoder's export: its names are checked, not its attributes
# PEP 688's name for the buffer protocol; Python 3.11 exposes no such attribute
NOT_ATTRIBUTES = {"__buffer__"}


def stub_tree(name: str) -> ast.Module:
    return ast.parse(Path(MODULES[name].__file__).with_name(f"{name}.pyi").read_text())


def stub_all(tree: ast.Module) -> list[str]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["__all__"]:
            return ast.literal_eval(node.value)
    raise AssertionError("the stub has no __all__")


def stub_definitions(body) -> dict[str, ast.AST]:
    return {node.name: node for node in body if isinstance(node, (ast.ClassDef, ast.FunctionDef))}


def is_property(function: ast.FunctionDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "property" for d in function.decorator_list)


def stub_parameters(function: ast.FunctionDef) -> list[tuple[str, object]]:
    """(name, default) of each parameter but self; `inspect.Parameter.empty` when none."""
    args = function.args
    positional = args.posonlyargs + args.args
    defaults = [inspect.Parameter.empty] * (len(positional) - len(args.defaults))
    defaults += [ast.literal_eval(d) for d in args.defaults]
    pairs = [(a.arg, d) for a, d in zip(positional, defaults)]
    pairs += [(a.arg, inspect.Parameter.empty if d is None else ast.literal_eval(d))
              for a, d in zip(args.kwonlyargs, args.kw_defaults)]
    return [p for p in pairs if p[0] != "self"]


def runtime_parameters(function) -> list[tuple[str, object]]:
    return [(p.name, p.default) for p in inspect.signature(function).parameters.values()
            if p.name != "self"]


def embedded_init_parameters(cls) -> list[tuple[str, object]] | None:
    """__init__'s parameters from the signature embedsignature puts first in
    the class docstring ("BatchBuffer(Py_ssize_t event_limit=0, ...)"), or
    None when it has none (a constructor written as __cinit__)."""
    match = re.match(rf"{cls.__name__}\((.*)\)\n", cls.__doc__ or "")
    if not match:
        return None
    parameters = []
    for part in filter(None, (p.strip() for p in match.group(1).split(","))):
        declaration, _, default = part.partition("=")
        name = declaration.split()[-1]
        parameters.append((name, ast.literal_eval(default) if default else inspect.Parameter.empty))
    return [p for p in parameters if p[0] != "self"]


def public_runtime_names(module) -> set[str]:
    """What the module exports, and the classes it defines without a leading underscore."""
    defined = {name for name, value in vars(module).items()
               if inspect.isclass(value) and value.__module__ == module.__name__ and not name.startswith("_")}
    return set(module.__all__) | defined


def class_cases():
    for name in MODULES:
        for class_name, node in stub_definitions(stub_tree(name).body).items():
            if isinstance(node, ast.ClassDef):
                yield pytest.param(name, class_name, node, id=f"{name}.{class_name}")


@pytest.mark.parametrize("name", MODULES)
def test_stub_names_are_the_module_names(name):
    tree, module = stub_tree(name), MODULES[name]
    assert stub_all(tree) == list(module.__all__)
    stubbed = set(stub_definitions(tree.body))
    assert {n for n in stubbed if not n.startswith("_")} == public_runtime_names(module)
    for stub_name in stubbed:
        assert hasattr(module, stub_name), f"{name}.pyi declares {stub_name}, the module has none"


@pytest.mark.parametrize("name", MODULES)
def test_module_function_signatures(name):
    module = MODULES[name]
    for function_name, node in stub_definitions(stub_tree(name).body).items():
        if isinstance(node, ast.FunctionDef):
            assert stub_parameters(node) == runtime_parameters(getattr(module, function_name)), function_name


@pytest.mark.parametrize("name, class_name, node", list(class_cases()))
def test_class_members_match(name, class_name, node):
    cls = getattr(MODULES[name], class_name)
    members = stub_definitions(node.body)
    attributes = {n.target.id for n in node.body if isinstance(n, ast.AnnAssign)}
    for member_name, member in members.items():
        if member_name in NOT_ATTRIBUTES:
            continue
        assert hasattr(cls, member_name), f"{class_name}.{member_name} is in the stub only"
        runtime = inspect.getattr_static(cls, member_name)
        if member_name == "__init__":
            embedded = embedded_init_parameters(cls)
            if embedded is not None:
                assert stub_parameters(member) == embedded
        elif is_property(member):
            assert inspect.isdatadescriptor(runtime), f"{class_name}.{member_name} is not a property"
        elif not member_name.startswith("__"):
            assert stub_parameters(member) == runtime_parameters(getattr(cls, member_name)), member_name
    for attribute in attributes:
        assert inspect.isdatadescriptor(inspect.getattr_static(cls, attribute)), attribute
    # every public method and attribute of the class (and its bases) is in the stub
    stubbed = stub_member_names(name, class_name)
    for base in cls.__mro__[:-1]:
        for member_name in vars(base):
            if not member_name.startswith("_"):
                assert member_name in stubbed, f"{class_name}.{member_name} is missing from {name}.pyi"


def stub_member_names(name: str, class_name: str) -> set[str]:
    """Methods and attributes the stub gives a class, its stub bases' included."""
    classes = {n.name: n for n in stub_tree(name).body if isinstance(n, ast.ClassDef)}
    node = classes[class_name]
    names = set(stub_definitions(node.body)) | {n.target.id for n in node.body if isinstance(n, ast.AnnAssign)}
    for base in node.bases:
        if isinstance(base, ast.Name) and base.id in classes:
            names |= stub_member_names(name, base.id)
    return names


@pytest.mark.parametrize("name, class_name, node", [case for case in class_cases() if case.values[1] in INSTANCES])
def test_read_only_and_writable_attributes(name, class_name, node):
    obj = INSTANCES[class_name]()
    for member in node.body:
        if isinstance(member, ast.FunctionDef) and is_property(member):
            with pytest.raises(AttributeError):
                setattr(obj, member.name, getattr(obj, member.name))
        elif isinstance(member, ast.AnnAssign):
            setattr(obj, member.target.id, getattr(obj, member.target.id))


@pytest.mark.parametrize("class_name, make", [
    ("Encoder", lambda cls, kwargs: cls(**kwargs)),
    ("Encoder", lambda cls, kwargs: cls(*kwargs.values())),
])
def test_cinit_constructor_takes_the_stub_parameters(class_name, make):
    # Encoder's constructor is __cinit__, whose signature is not embedded: call it as the stub says
    node = stub_definitions(stub_tree("_encoder").body)[class_name]
    parameters = stub_parameters(stub_definitions(node.body)["__init__"])
    assert all(default is not inspect.Parameter.empty for _, default in parameters)
    obj = make(getattr(compiled_encoder, class_name), dict(parameters))
    assert isinstance(obj, getattr(compiled_encoder, class_name))
