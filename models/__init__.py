"""Model registry: ``--model NAME`` -> ``models/NAME_model.py`` -> its ``BaseModel`` subclass.

To add a model, copy ``template_model.py`` to ``<name>_model.py`` and rename the class to
``<Name>Model`` (case-insensitive, underscores dropped: ``insta_gan`` -> ``InstaGANModel``).
"""
import os

from models.base_model import BaseModel
from util import registry

_DIR = os.path.dirname(os.path.abspath(__file__))


def available_models():
    """Names accepted by ``--model``."""
    return registry.available(_DIR, '_model', exclude=('base',))


def find_model_using_name(model_name):
    """The ``BaseModel`` subclass of ``models/<model_name>_model.py``; unknown names raise
    ``UserInputError`` listing the models."""
    return registry.find_class('models', _DIR, model_name, '_model', BaseModel, 'model', exclude=('base',))


def get_option_setter(model_name, parser=None):
    """The model's ``modify_commandline_options``; with a parser, a bad name exits with status 2."""
    if parser is None:
        return find_model_using_name(model_name).modify_commandline_options
    return registry.option_setter('models', _DIR, model_name, '_model', BaseModel, 'model', parser,
                                  exclude=('base',))


def create_model(opt):
    """Build the model named by ``opt.model``: ``model = create_model(opt); model.setup(opt)``."""
    model = find_model_using_name(opt.model)(opt)
    if opt.verbose:
        print(f'model [{type(model).__name__}] was created')
    return model
