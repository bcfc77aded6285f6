from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KIND_UNSPECIFIED: _ClassVar[Kind]
    MESH: _ClassVar[Kind]
    SECRET: _ClassVar[Kind]
    GLOBAL_SECRET: _ClassVar[Kind]
KIND_UNSPECIFIED: Kind
MESH: Kind
SECRET: Kind
GLOBAL_SECRET: Kind

class Resource(_message.Message):
    __slots__ = ("kind", "mesh", "name", "data", "labels", "creation_time", "modification_time", "version", "spec")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESH_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CREATION_TIME_FIELD_NUMBER: _ClassVar[int]
    MODIFICATION_TIME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    kind: Kind
    mesh: str
    name: str
    data: bytes
    labels: _containers.ScalarMap[str, str]
    creation_time: str
    modification_time: str
    version: int
    spec: bytes
    def __init__(self, kind: _Optional[_Union[Kind, str]] = ..., mesh: _Optional[str] = ..., name: _Optional[str] = ..., data: _Optional[bytes] = ..., labels: _Optional[_Mapping[str, str]] = ..., creation_time: _Optional[str] = ..., modification_time: _Optional[str] = ..., version: _Optional[int] = ..., spec: _Optional[bytes] = ...) -> None: ...

class ResourceKey(_message.Message):
    __slots__ = ("kind", "mesh", "name")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESH_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    kind: Kind
    mesh: str
    name: str
    def __init__(self, kind: _Optional[_Union[Kind, str]] = ..., mesh: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class Change(_message.Message):
    __slots__ = ("revision", "put", "delete")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    PUT_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    revision: int
    put: Resource
    delete: ResourceKey
    def __init__(self, revision: _Optional[int] = ..., put: _Optional[_Union[Resource, _Mapping]] = ..., delete: _Optional[_Union[ResourceKey, _Mapping]] = ...) -> None: ...

class ResumePoint(_message.Message):
    __slots__ = ("global_store_id", "revision", "chain")
    GLOBAL_STORE_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    global_store_id: str
    revision: int
    chain: bytes
    def __init__(self, global_store_id: _Optional[str] = ..., revision: _Optional[int] = ..., chain: _Optional[bytes] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("zone", "instance_id", "software_version", "protocol_version", "resume", "store_backend", "max_message_bytes")
    ZONE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    STORE_BACKEND_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    zone: str
    instance_id: str
    software_version: str
    protocol_version: int
    resume: ResumePoint
    store_backend: str
    max_message_bytes: int
    def __init__(self, zone: _Optional[str] = ..., instance_id: _Optional[str] = ..., software_version: _Optional[str] = ..., protocol_version: _Optional[int] = ..., resume: _Optional[_Union[ResumePoint, _Mapping]] = ..., store_backend: _Optional[str] = ..., max_message_bytes: _Optional[int] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("seq", "applied_revision", "rejected", "held_ms")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    APPLIED_REVISION_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    HELD_MS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    applied_revision: int
    rejected: _containers.RepeatedCompositeFieldContainer[Rejection]
    held_ms: int
    def __init__(self, seq: _Optional[int] = ..., applied_revision: _Optional[int] = ..., rejected: _Optional[_Iterable[_Union[Rejection, _Mapping]]] = ..., held_ms: _Optional[int] = ...) -> None: ...

class Rejection(_message.Message):
    __slots__ = ("key", "reason")
    KEY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    key: ResourceKey
    reason: str
    def __init__(self, key: _Optional[_Union[ResourceKey, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class ZoneStatus(_message.Message):
    __slots__ = ("conflicts", "problem", "conflict_count")
    CONFLICTS_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    CONFLICT_COUNT_FIELD_NUMBER: _ClassVar[int]
    conflicts: _containers.RepeatedCompositeFieldContainer[ResourceKey]
    problem: str
    conflict_count: int
    def __init__(self, conflicts: _Optional[_Iterable[_Union[ResourceKey, _Mapping]]] = ..., problem: _Optional[str] = ..., conflict_count: _Optional[int] = ...) -> None: ...

class ZoneMessage(_message.Message):
    __slots__ = ("hello", "ack", "status", "digest_answer")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DIGEST_ANSWER_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    ack: Ack
    status: ZoneStatus
    digest_answer: DigestAnswer
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., status: _Optional[_Union[ZoneStatus, _Mapping]] = ..., digest_answer: _Optional[_Union[DigestAnswer, _Mapping]] = ...) -> None: ...

class DigestNode(_message.Message):
    __slots__ = ("kind", "mesh", "prefix", "count", "hash", "listed", "leaves")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESH_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    LISTED_FIELD_NUMBER: _ClassVar[int]
    LEAVES_FIELD_NUMBER: _ClassVar[int]
    kind: Kind
    mesh: str
    prefix: str
    count: int
    hash: bytes
    listed: bool
    leaves: _containers.RepeatedCompositeFieldContainer[DigestLeaf]
    def __init__(self, kind: _Optional[_Union[Kind, str]] = ..., mesh: _Optional[str] = ..., prefix: _Optional[str] = ..., count: _Optional[int] = ..., hash: _Optional[bytes] = ..., listed: _Optional[bool] = ..., leaves: _Optional[_Iterable[_Union[DigestLeaf, _Mapping]]] = ...) -> None: ...

class DigestLeaf(_message.Message):
    __slots__ = ("name", "digest")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    name: str
    digest: bytes
    def __init__(self, name: _Optional[str] = ..., digest: _Optional[bytes] = ...) -> None: ...

class DigestQuery(_message.Message):
    __slots__ = ("check", "revision", "groups", "parents", "nodes")
    CHECK_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    check: int
    revision: int
    groups: bool
    parents: _containers.RepeatedCompositeFieldContainer[DigestNode]
    nodes: _containers.RepeatedCompositeFieldContainer[DigestNode]
    def __init__(self, check: _Optional[int] = ..., revision: _Optional[int] = ..., groups: _Optional[bool] = ..., parents: _Optional[_Iterable[_Union[DigestNode, _Mapping]]] = ..., nodes: _Optional[_Iterable[_Union[DigestNode, _Mapping]]] = ...) -> None: ...

class DigestAnswer(_message.Message):
    __slots__ = ("check", "revision", "differ")
    CHECK_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    DIFFER_FIELD_NUMBER: _ClassVar[int]
    check: int
    revision: int
    differ: _containers.RepeatedCompositeFieldContainer[DigestNode]
    def __init__(self, check: _Optional[int] = ..., revision: _Optional[int] = ..., differ: _Optional[_Iterable[_Union[DigestNode, _Mapping]]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("global_instance_id", "global_store_id", "head_revision", "mode", "max_unacked", "protocol_version", "software_version", "heartbeat_interval_ms", "ack_delay_ms", "max_unacked_bytes")
    class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        MODE_UNSPECIFIED: _ClassVar[Welcome.Mode]
        RESUME: _ClassVar[Welcome.Mode]
        SNAPSHOT: _ClassVar[Welcome.Mode]
    MODE_UNSPECIFIED: Welcome.Mode
    RESUME: Welcome.Mode
    SNAPSHOT: Welcome.Mode
    GLOBAL_INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_STORE_ID_FIELD_NUMBER: _ClassVar[int]
    HEAD_REVISION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    MAX_UNACKED_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    ACK_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_UNACKED_BYTES_FIELD_NUMBER: _ClassVar[int]
    global_instance_id: str
    global_store_id: str
    head_revision: int
    mode: Welcome.Mode
    max_unacked: int
    protocol_version: int
    software_version: str
    heartbeat_interval_ms: int
    ack_delay_ms: int
    max_unacked_bytes: int
    def __init__(self, global_instance_id: _Optional[str] = ..., global_store_id: _Optional[str] = ..., head_revision: _Optional[int] = ..., mode: _Optional[_Union[Welcome.Mode, str]] = ..., max_unacked: _Optional[int] = ..., protocol_version: _Optional[int] = ..., software_version: _Optional[str] = ..., heartbeat_interval_ms: _Optional[int] = ..., ack_delay_ms: _Optional[int] = ..., max_unacked_bytes: _Optional[int] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("seq", "from_revision", "revision", "snapshot", "final", "head_revision", "chain", "repair", "changes")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    FROM_REVISION_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    HEAD_REVISION_FIELD_NUMBER: _ClassVar[int]
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    REPAIR_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    seq: int
    from_revision: int
    revision: int
    snapshot: bool
    final: bool
    head_revision: int
    chain: bytes
    repair: bool
    changes: _containers.RepeatedCompositeFieldContainer[Change]
    def __init__(self, seq: _Optional[int] = ..., from_revision: _Optional[int] = ..., revision: _Optional[int] = ..., snapshot: _Optional[bool] = ..., final: _Optional[bool] = ..., head_revision: _Optional[int] = ..., chain: _Optional[bytes] = ..., repair: _Optional[bool] = ..., changes: _Optional[_Iterable[_Union[Change, _Mapping]]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("head_revision",)
    HEAD_REVISION_FIELD_NUMBER: _ClassVar[int]
    head_revision: int
    def __init__(self, head_revision: _Optional[int] = ...) -> None: ...

class GlobalMessage(_message.Message):
    __slots__ = ("welcome", "batch", "heartbeat", "digest_query")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    DIGEST_QUERY_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    batch: Batch
    heartbeat: Heartbeat
    digest_query: DigestQuery
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., batch: _Optional[_Union[Batch, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., digest_query: _Optional[_Union[DigestQuery, _Mapping]] = ...) -> None: ...
