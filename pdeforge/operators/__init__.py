"""Neural operators as plain ``torch.nn`` modules behind one registry.

>>> from pdeforge import operators
>>> model = operators.build("mgno", in_channels=1, out_channels=1, dim=2)
>>> same = operators.build(model.name, **model.config)
"""

from pdeforge.operators.base import Operator, OperatorConfigError, OperatorInputError
from pdeforge.operators.deeponet import DeepONet
from pdeforge.operators.fno import FNO
from pdeforge.operators.lsm import LSM
from pdeforge.operators.mgno import MgNO
from pdeforge.operators.mgtfno import MGTFNO
from pdeforge.operators.registry import available, build, get, register

for _cls in (MgNO, MGTFNO, FNO, DeepONet, LSM):
    register(_cls)

__all__ = [
    "FNO",
    "LSM",
    "DeepONet",
    "MGTFNO",
    "MgNO",
    "Operator",
    "OperatorConfigError",
    "OperatorInputError",
    "available",
    "build",
    "get",
    "register",
]
