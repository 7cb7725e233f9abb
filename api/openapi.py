"""What the OpenAPI document says beyond what Litestar infers from the handlers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.openapi.spec import Schema

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.typing import FieldDefinition


class StrictStructs(StructSchemaPlugin):
    """Litestar's struct schemas, with what they leave out: a struct that forbids unknown
    fields says so (`additionalProperties: false`), and the items of a list of constrained
    strings keep their constraints (`tags`: at most 64 characters each). Clients and fuzzers
    then know what is rejected (422) rather than find out."""

    def to_openapi_schema(
        self, field_definition: FieldDefinition, schema_creator: SchemaCreator
    ) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        info = msgspec.inspect.type_info(field_definition.type_)
        if not isinstance(info, msgspec.inspect.StructType):
            return schema
        if info.forbid_unknown_fields:
            schema.additional_properties = False
        for field in info.fields:
            _constrain_items(schema.properties or {}, field)
        return schema


def _bare(kind: msgspec.inspect.Type) -> msgspec.inspect.Type:
    return kind.type if isinstance(kind, msgspec.inspect.Metadata) else kind


def _constrain_items(properties: dict[str, Any], field: msgspec.inspect.Field) -> None:
    kind = _bare(field.type)
    if not isinstance(kind, msgspec.inspect.ListType):
        return
    item = _bare(kind.item_type)
    target = properties.get(field.encode_name)
    if not isinstance(item, msgspec.inspect.StrType) or not isinstance(target, Schema):
        return
    if isinstance(target.items, Schema):
        target.items.min_length = item.min_length
        target.items.max_length = item.max_length
        target.items.pattern = item.pattern
