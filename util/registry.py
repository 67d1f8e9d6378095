"""Find a class by file name: ``--model insta_gan`` -> ``models/insta_gan_model.py`` ->
``InstaGANModel``. Unknown names fail loudly with the list of choices (never ``exit(0)``)."""
import importlib
import os

from util.errors import UserInputError


def available(package_dir, suffix, exclude=()):
    """Names ``X`` of the files ``X<suffix>.py`` in ``package_dir``, sorted."""
    names = [f[:-len(suffix) - 3] for f in os.listdir(package_dir)
             if f.endswith(suffix + '.py') and not f.startswith('_')]
    return sorted(n for n in names if n not in exclude)


def find_class(package, package_dir, name, suffix, base_cls, kind, exclude=()):
    """Import ``<package>.<name><suffix>`` and return its ``base_cls`` subclass whose name equals
    ``<name><suffix>`` ignoring case and underscores."""
    choices = available(package_dir, suffix, exclude)
    if name not in choices:
        raise UserInputError(f'unknown {kind} {name!r}; choose one of: {", ".join(choices)}')
    module = importlib.import_module(f'{package}.{name}{suffix}')
    target = (name + suffix).replace('_', '').lower()
    for cls_name, cls in vars(module).items():
        if cls_name.lower() == target and isinstance(cls, type) and issubclass(cls, base_cls):
            return cls
    raise UserInputError(f'{package}/{name}{suffix}.py must define a subclass of {base_cls.__name__} '
                         f'named like {target} (case-insensitive)')


def option_setter(package, package_dir, name, suffix, base_cls, kind, parser, exclude=()):
    """The static ``modify_commandline_options`` of the class; a bad name is a parser error
    (exit status 2) that lists the choices."""
    try:
        cls = find_class(package, package_dir, name, suffix, base_cls, kind, exclude)
    except UserInputError as e:
        parser.error(str(e))
    return cls.modify_commandline_options
