"""The one Weaviate collection Parley uses: how it is created, and whether an existing one will do.

Every call of :class:`~parley.vectors.weaviate_index.WeaviateVectorIndex` relies on this
configuration: native multi-tenancy with automatic tenant creation and activation (a write to a
new tenant creates it, a query on an inactive one wakes it), one self-provided vector compared by
cosine distance (the score is turned into the same cosine similarity the embedded index gives),
``document_id`` and ``kind`` stored whole (``field`` tokenization, filterable: a delete by document
matches exactly that document), ``title`` and ``text`` searchable by BM25 with word tokenization.

A collection of that name made by hand or by another program can differ in any of these, and
then calls fail (multi-tenancy off: every tenant-scoped call is refused) or, worse, misbehave
(another distance: scores on another scale; word-tokenized ``document_id``: a delete by document
id can hit other documents). :func:`config_problems` lists the differences so the index can
refuse to use the collection with a message saying what is wrong.
"""

from __future__ import annotations

from typing import Any

from weaviate.classes.config import Configure, DataType, Property, Tokenization, VectorDistances

#: Properties a hit returns (the vector is never read back).
RETURNED = ["document_id", "kind", "title", "text", "heading_path", "metadata_json"]


def properties() -> list[Property]:
    exact = dict(data_type=DataType.TEXT, tokenization=Tokenization.FIELD, index_searchable=False)
    stored = dict(index_searchable=False, index_filterable=False)
    return [
        Property(name="document_id", **exact),
        Property(name="kind", **exact),
        Property(name="title", data_type=DataType.TEXT),
        Property(name="text", data_type=DataType.TEXT),
        Property(name="heading_path", data_type=DataType.TEXT_ARRAY, **stored),
        Property(name="metadata_json", data_type=DataType.TEXT, **stored),
    ]


def create_arguments() -> dict[str, Any]:
    """Keyword arguments of ``client.collections.create`` (besides the name)."""
    return dict(
        properties=properties(),
        vector_config=Configure.Vectors.self_provided(
            vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE)
        ),
        multi_tenancy_config=Configure.multi_tenancy(enabled=True, auto_tenant_creation=True, auto_tenant_activation=True),
    )


#: name -> (data type, tokenization or None for "any", must be filterable, must be BM25-searchable)
_EXPECTED: dict[str, tuple[DataType, Tokenization | None, bool, bool]] = {
    "document_id": (DataType.TEXT, Tokenization.FIELD, True, False),
    "kind": (DataType.TEXT, Tokenization.FIELD, True, False),
    "title": (DataType.TEXT, Tokenization.WORD, False, True),
    "text": (DataType.TEXT, Tokenization.WORD, False, True),
    "heading_path": (DataType.TEXT_ARRAY, None, False, False),
    "metadata_json": (DataType.TEXT, None, False, False),
}


def config_problems(config: Any) -> list[str]:
    """What keeps an existing collection (a client ``CollectionConfig``) from working; empty when it fits."""
    problems: list[str] = []
    tenancy = config.multi_tenancy_config
    if not tenancy.enabled:
        problems.append("multi-tenancy is disabled (Parley keeps one Weaviate tenant per Parley tenant)")
    else:
        if not tenancy.auto_tenant_creation:
            problems.append("automatic tenant creation is off")
        if not tenancy.auto_tenant_activation:
            problems.append("automatic tenant activation is off (an inactive tenant would fail every search)")
    problems += _vector_problems(config)
    present = {prop.name: prop for prop in config.properties}
    for name, (data_type, tokenization, filterable, searchable) in _EXPECTED.items():
        prop = present.get(name)
        if prop is None:
            problems.append(f"property {name!r} is missing")
            continue
        if prop.data_type != data_type:
            problems.append(f"property {name!r} is {prop.data_type.value}, not {data_type.value}")
            continue
        if tokenization is not None and prop.tokenization != tokenization:
            found = prop.tokenization.value if prop.tokenization is not None else "none"
            problems.append(f"property {name!r} has {found} tokenization, not {tokenization.value}")
        if filterable and not prop.index_filterable:
            problems.append(f"property {name!r} is not filterable")
        if searchable and not prop.index_searchable:
            problems.append(f"property {name!r} is not searchable (BM25)")
    return problems


def _vector_problems(config: Any) -> list[str]:
    named = config.vector_config
    if named:
        if len(named) != 1:
            return [f"it has {len(named)} named vectors ({', '.join(sorted(named))}), Parley writes one"]
        ((name, vector),) = named.items()
        vectorizer, index = vector.vectorizer.vectorizer, vector.vector_index_config
        where = f"vector {name!r}"
    else:
        vectorizer, index, where = config.vectorizer, config.vector_index_config, "the vector"
    problems = []
    if _value(vectorizer) not in ("none", None):
        problems.append(f"{where} is made by the {_value(vectorizer)} module; Parley provides its own vectors")
    distance = _value(getattr(index, "distance_metric", None))
    if distance != VectorDistances.COSINE.value:
        problems.append(f"{where} is compared by {distance or 'no'} distance, not cosine")
    return problems


def _value(enum_or_str: Any) -> str | None:
    return None if enum_or_str is None else str(getattr(enum_or_str, "value", enum_or_str))
