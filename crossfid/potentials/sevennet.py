"""The SevenNet family: peer models from the ``sevenn`` wheel (0.13.x, CPU), built on :mod:`.ase_calculator`.

Models (:data:`SHIPPED_MODELS`, by crossfid name; the checkpoints ship inside the wheel, found
through sevenn's own pretrained-name table (``sevenn._const``), never downloaded, and checked
against the SHA-256 recorded here before loading):

* ``sevennet-0``: ``SevenNetCalculator("7net-0")``, SevenNet-0 (11 Jul 2024) on MPtrj: GGA / GGA+U.
* ``sevennet-mf-0-pbe``: ``SevenNetCalculator("7net-mf-0", modal="PBE")``, the multi-fidelity
  SevenNet-MF-0, its PBE modality (trained on MPtrj): GGA / GGA+U.
* ``sevennet-mf-0-r2scan``: the same checkpoint, ``modal="R2SCAN"`` (trained on MP r2SCAN
  data): r2SCAN.

A sevenn checkpoint of one's own is a ``ModelSpec(name, kind="trained", path, sha256,
family="SevenNet", options=encode_options({"modal": ...}))``.

Everything is computed by ``sevenn.calculator.SevenNetCalculator`` through ASE
(:class:`~crossfid.potentials.ase_calculator.AsePotential`): energy (total eV, divided by the
number of atoms), forces, stress (Voigt eV/Å³ → 3×3 GPa, tensile positive). SevenNet
predicts no magnetic moments (NaN, see :mod:`.ase_calculator`). Peers are never fine-tuned.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from crossfid.errors import NotFoundError
from crossfid.potentials.ase_calculator import AsePotential, checked_weights, quietly, torch_parameter_count
from crossfid.potentials.base import ModelSpec, register_family

FAMILY = "SevenNet"  # the models.family of every SevenNet row

#: sevenn warns at every calculator construction that no GPU tensor-product accelerator is enabled (CPU)
SEVENN_ACCELERATOR_WARNING = "No tensor product accelerator is enabled"


@dataclass(frozen=True)
class ShippedModel:
    """A checkpoint inside the sevenn wheel (with a modality for a multi-fidelity one), under its crossfid name."""

    name: str
    sevenn_name: str  # sevenn's pretrained name (argument of SevenNetCalculator)
    constant: str  # the sevenn._const attribute holding its checkpoint path
    modal: str | None  # modality of a multi-fidelity model
    sha256: str  # of the checkpoint file shipped in sevenn 0.13.0
    fidelities: tuple[str, ...]  # the fidelities (vocabulary names) its training data had
    label: str  # for humans (provenance, corpus headers)

    @property
    def load_call(self) -> str:
        """How sevenn loads it, as text (recorded in provenance)."""
        modal = "" if self.modal is None else f", modal={self.modal!r}"
        return f"SevenNetCalculator({self.sevenn_name!r}{modal}, device='cpu')"

    def weights_file(self) -> Path:
        """The checkpoint inside the installed sevenn package (NotFoundError when it is not there; never downloaded)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # e3nn's torch.jit.script at import
            from sevenn import _const

        path = Path(getattr(_const, self.constant))
        if not path.is_file():
            raise NotFoundError(f"model {self.name}: the sevenn package has no checkpoint {path}")
        return path


SHIPPED_MODELS: dict[str, ShippedModel] = {
    model.name: model
    for model in (
        ShippedModel(
            "sevennet-0",
            "7net-0",
            "SEVENNET_0_11Jul2024",
            None,
            "7052cb42b7b3be42b40b97fa0d21077a48c54b5548948fc4dcf346629f813c36",
            ("GGA", "GGA+U"),
            "SevenNet-0 (11Jul2024, MPtrj)",
        ),
        ShippedModel(
            "sevennet-mf-0-pbe",
            "7net-mf-0",
            "SEVENNET_MF_0",
            "PBE",
            "81791329b37d445f46b531578c182c41792d98c7814222c9e5dde276402225fd",
            ("GGA", "GGA+U"),
            "SevenNet-MF-0, PBE modality (MPtrj)",
        ),
        ShippedModel(
            "sevennet-mf-0-r2scan",
            "7net-mf-0",
            "SEVENNET_MF_0",
            "R2SCAN",
            "81791329b37d445f46b531578c182c41792d98c7814222c9e5dde276402225fd",
            ("r2SCAN",),
            "SevenNet-MF-0, R2SCAN modality (MP r2SCAN)",
        ),
    )
}


def sevenn_version() -> str:
    """The installed sevenn version (e.g. ``"0.13.0"``)."""
    from importlib.metadata import version

    return version("sevenn")


def _calculator(path: Path, modal: str | None):
    with quietly(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=SEVENN_ACCELERATOR_WARNING)
        warnings.simplefilter("ignore", DeprecationWarning)  # e3nn's torch.jit.script at import
        from sevenn.calculator import SevenNetCalculator

        return SevenNetCalculator(str(path), modal=modal, device="cpu")


def _load(spec: ModelSpec) -> SevenNetPotential:
    if spec.kind == "package":
        try:
            shipped = SHIPPED_MODELS[spec.name]
        except KeyError:
            known = ", ".join(SHIPPED_MODELS)
            raise NotFoundError(f"no model {spec.name!r} ships with sevenn; known: {known}") from None
        path = checked_weights(spec.name, shipped.weights_file(), shipped.sha256)
        modal = shipped.modal
    else:
        path = checked_weights(spec.name, spec.path, spec.sha256)
        modal = spec.option_values().get("modal")
    calculator = _calculator(path, modal)
    return SevenNetPotential(spec.name, calculator, n_parameters=torch_parameter_count(calculator))


class SevenNetPotential(AsePotential):
    """A loaded SevenNet (``model``: the ``sevenn.calculator.SevenNetCalculator``), on CPU, one modality."""

    family = FAMILY

    @classmethod
    def filter_warnings(cls) -> None:
        """Ignore sevenn's missing-accelerator warning (:data:`SEVENN_ACCELERATOR_WARNING`) in this process."""
        warnings.filterwarnings("ignore", message=SEVENN_ACCELERATOR_WARNING)


register_family(FAMILY, _load, lambda: SevenNetPotential)
