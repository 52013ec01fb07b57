"""Catalog specs (internal; public names are re-exported by :mod:`shelfwise.catalog`).

A :class:`CatalogSpec` says how one source file maps to shelfwise's canonical columns; it loads from
YAML (``CatalogSpec.from_file``) or from CLI-style ``canonical=source`` strings (:func:`parse_mapping`).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from shelfwise.errors import ConfigError

#: Canonical names a spec may map source columns to (``review_title`` is for reviews tables).
CANONICAL_INPUTS: tuple[str, ...] = (
    "sku_id",
    "title",
    "description",
    "brand",
    "attributes",
    "image_path",
    "category_path",
    "price",
    "review_text",
    "review_title",
    "rating",
)
_ALIASES = {"image": "image_path", "category": "category_path", "sku": "sku_id"}


# ==================================================================================================
# Spec
# ==================================================================================================
class CatalogFormat(StrEnum):
    CSV = "csv"
    PARQUET = "parquet"
    JSONL = "jsonl"


class CategoryFormat(StrEnum):
    AUTO = "auto"  #: a JSON list when the value starts with "[", else a path
    PATH = "path"  #: "A > B > C" (any separator, see category_separator)
    JSON_LIST = "json_list"  #: '["A >> B >> C"]' (first item used)


class AttributesFormat(StrEnum):
    AUTO = "auto"  #: Ruby hash when it contains "=>", JSON when it parses, else text
    TEXT = "text"  #: kept as given
    RUBY_HASH = "ruby_hash"  #: Flipkart: {"product_specification"=>[{"key"=>"Type", "value"=>"Curtain"}]}
    JSON = "json"  #: {"Type": "Curtain"} or [{"key": "Type", "value": "Curtain"}]


class ImageFormat(StrEnum):
    AUTO = "auto"  #: a JSON list when the value starts with "[", else a path
    PATH = "path"  #: a path or file name (relative ones resolved against images_root)
    JSON_LIST = "json_list"  #: '["a.jpg", "b.jpg"]' or a list of URLs (first item; URLs matched by file name)


class CsvOptions(BaseModel):
    """How to read a CSV file."""

    model_config = ConfigDict(extra="forbid")

    separator: str = Field(default=",", min_length=1, max_length=1)
    encoding: str = "utf8"
    quote_char: str | None = '"'


class CatalogSpec(BaseModel):
    """How one source file maps to shelfwise's canonical columns (YAML: :meth:`from_file`)."""

    model_config = ConfigDict(extra="forbid", use_enum_values=False)

    name: str | None = None
    description: str | None = None
    format: CatalogFormat | None = None
    csv: CsvOptions = Field(default_factory=CsvOptions)
    #: canonical name -> source column; canonical names not listed use a source column of the same name.
    columns: dict[str, str] = Field(default_factory=dict)
    category_format: CategoryFormat = CategoryFormat.AUTO
    #: e.g. " >> "; ``None`` splits on ">" or ">>"
    category_separator: str | None = None
    #: cut product-specific trailing levels with ``taxonomy.deepest_known`` (kept whole if nothing matches)
    truncate_category_to_taxonomy: bool = False
    attributes_format: AttributesFormat = AttributesFormat.AUTO
    #: tried in order; the first parseable non-empty value is the price
    price_columns: list[str] = Field(default_factory=list)
    image_format: ImageFormat = ImageFormat.AUTO
    #: folder that relative image paths are resolved against; relative to the catalog file's folder
    images_root: str | None = None
    #: source values that mean "no value" (compared after trimming whitespace)
    null_values: list[str] = Field(default_factory=list)

    _source: str | None = PrivateAttr(default=None)

    @field_validator("columns")
    @classmethod
    def _check_columns(cls, value: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, column in value.items():
            name = _ALIASES.get(key, key)
            if name not in CANONICAL_INPUTS:
                raise ValueError(f"unknown canonical column {key!r}; allowed: {', '.join(CANONICAL_INPUTS)}")
            if not isinstance(column, str) or not column:
                raise ValueError(f"columns.{key} must name a source column, got {column!r}")
            out[name] = column
        return out

    @property
    def source(self) -> str | None:
        """The YAML file this spec was loaded from, if any."""
        return self._source

    @classmethod
    def from_file(cls, path: str | Path) -> CatalogSpec:
        """Load a spec from YAML; raises :class:`ConfigError` naming the file, the field and the fix."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"catalog spec {path}: file not found; fix: check the --spec path") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"catalog spec {path}: not valid YAML: {exc}") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(
                f"catalog spec {path}: expected a mapping of settings, got {type(data).__name__}"
            )
        spec = cls._validated(data, where=f"catalog spec {path}")
        spec._source = str(path)
        return spec

    @classmethod
    def _validated(cls, data: dict[str, Any], *, where: str) -> CatalogSpec:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
                msg = err["msg"]
                if err["type"] == "extra_forbidden":
                    msg = f"unknown setting; allowed: {', '.join(sorted(cls.model_fields))}"
                problems.append(f"{loc}: {msg} (got {err.get('input')!r})")
            raise ConfigError(f"{where}: " + "; ".join(problems)) from None


_LIST_KEYS = {"price_columns", "null_values"}
_CSV_KEYS = {"separator", "encoding", "quote_char"}


def parse_mapping(items: Sequence[str], *, base: CatalogSpec | None = None) -> CatalogSpec:
    """CLI-style ``canonical=source`` strings -> a spec (overriding ``base``).

    ``title=product_name`` maps a column; ``price=discounted_price,retail_price`` sets the price columns
    in order; spec settings work the same way (``category_format=json_list``, ``separator=;``,
    ``truncate_category_to_taxonomy=true``, ``images_root=photos``).
    """
    data = base.model_dump(mode="json") if base is not None else {}
    data.setdefault("columns", {})
    data.setdefault("csv", {})
    allowed = sorted(set(CANONICAL_INPUTS) | set(_ALIASES) | set(CatalogSpec.model_fields) | _CSV_KEYS)
    for item in items:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ConfigError(
                f"--map {item!r}: expected canonical=source_column, e.g. --map title=product_name"
            )
        name = _ALIASES.get(key, key)
        if name == "price" and "," in value:
            data["price_columns"] = [v.strip() for v in value.split(",") if v.strip()]
            data["columns"].pop("price", None)
        elif name in CANONICAL_INPUTS:
            if not value:
                raise ConfigError(f"--map {item!r}: name the source column after '=', e.g. --map {key}=name")
            data["columns"][name] = value
            if name == "price":
                data["price_columns"] = []
        elif name in _CSV_KEYS:
            data["csv"][name] = value
        elif name in _LIST_KEYS:
            data[name] = [v.strip() for v in value.split(",") if v.strip()]
        elif name in CatalogSpec.model_fields and name not in {"columns", "csv"}:
            data[name] = value if value else None
        else:
            raise ConfigError(f"--map {item!r}: unknown key {key!r}; allowed: {', '.join(allowed)}")
    spec = CatalogSpec._validated(data, where="--map")
    if base is not None:
        spec._source = base.source
    return spec
