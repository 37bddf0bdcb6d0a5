"""Safe extraction of model archives: hostile tar and zip files built here, tiny limits.

Every refusal must leave no target folder and nothing outside it; every archive is made
by the test with tarfile/zipfile so its members say exactly what an attacker would write.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deepracer_nodes.core import archive as arc
from deepracer_nodes.core.archive import (
    ArchiveError, ExtractionLimits, extract_archive, locate_model, safe_member_path)

METADATA = b'{"action_space": [{"steering_angle": 0, "speed": 1}]}'
GRAPH = b'not really a graph, but bytes to carry'


def file_member(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def special_member(name: str, kind: bytes, linkname: str = '') -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info, None


def make_tar(path: Path, members, mode: str = 'w:gz') -> Path:
    with tarfile.open(path, mode) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def make_zip(path: Path, members) -> Path:
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED) as archive:
        for name, data, unix_mode in members:
            info = zipfile.ZipInfo(name)
            info.external_attr = unix_mode << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return path


CONSOLE = [file_member('model_metadata.json', METADATA),
           file_member('agent/model.pb', GRAPH),
           file_member('ip/hyperparameters.json', b'{}')]


@pytest.fixture
def sandbox(tmp_path):
    """tmp_path/archives for inputs, tmp_path/dest/model as the target; checks after the
    test that nothing but the target itself was ever written under dest."""
    (tmp_path / 'archives').mkdir()
    (tmp_path / 'dest').mkdir()
    return tmp_path


def everything_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob('*'))


def refused(sandbox: Path, archive: Path, match: str, limits=ExtractionLimits()) -> None:
    target = sandbox / 'dest' / 'model'
    with pytest.raises(ArchiveError, match=match):
        extract_archive(archive, target, limits)
    assert not target.exists(), 'a refused archive must leave no target folder'
    assert everything_under(sandbox / 'dest') == []
    assert sorted(p.name for p in sandbox.iterdir()) == ['archives', 'dest']


# --- archives that must extract -------------------------------------------------------------

@pytest.mark.parametrize('mode', ['w:gz', 'w', 'w:bz2', 'w:xz'])
def test_console_layout_extracts_every_tar_compression(sandbox, mode):
    archive = make_tar(sandbox / 'archives' / 'model.tar', CONSOLE, mode)
    target = sandbox / 'dest' / 'model'
    written = extract_archive(archive, target)
    assert written == [PurePosixPath('model_metadata.json'), PurePosixPath('agent/model.pb'),
                       PurePosixPath('ip/hyperparameters.json')]
    assert (target / 'agent' / 'model.pb').read_bytes() == GRAPH
    assert (target / 'model_metadata.json').read_bytes() == METADATA


def test_file_modes_from_the_archive_are_not_trusted(sandbox):
    archive = make_tar(sandbox / 'archives' / 'm.tar.gz',
                       [file_member('run.sh', b'#!/bin/sh\n', mode=0o4777)])
    target = sandbox / 'dest' / 'model'
    extract_archive(archive, target)
    mode = stat.S_IMODE((target / 'run.sh').stat().st_mode)
    assert not mode & (stat.S_ISUID | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH | stat.S_IWOTH)


def test_zip_extracts_and_dot_slash_names_are_normal(sandbox):
    archive = make_zip(sandbox / 'archives' / 'model.zip',
                       [('./model_metadata.json', METADATA, 0o100644),
                        ('agent/', b'', 0o040755),
                        ('agent/model.pb', GRAPH, 0o100644)])
    target = sandbox / 'dest' / 'model'
    extract_archive(archive, target)
    assert everything_under(target) == ['agent', 'agent/model.pb', 'model_metadata.json']


def test_an_existing_target_is_never_merged_into(sandbox):
    archive = make_tar(sandbox / 'archives' / 'm.tar.gz', CONSOLE)
    target = sandbox / 'dest' / 'model'
    target.mkdir()
    (target / 'keep.txt').write_text('mine')
    with pytest.raises(FileExistsError):
        extract_archive(archive, target)
    assert everything_under(target) == ['keep.txt']


# --- hostile tar archives --------------------------------------------------------------------

def test_path_traversal_is_refused_after_good_members_and_cleaned_up(sandbox):
    archive = make_tar(sandbox / 'archives' / 'evil.tar.gz',
                       [*CONSOLE, file_member('agent/../../escaped.txt', b'x')])
    refused(sandbox, archive, r"'\.\.'")


@pytest.mark.parametrize('name', ['../escaped.txt', 'a/../../escaped.txt', '..',
                                  '..\\escaped.txt', 'agent\\..\\..\\escaped.txt'])
def test_every_spelling_of_dot_dot_is_refused(sandbox, name):
    archive = make_tar(sandbox / 'archives' / 'evil.tar', [file_member(name, b'x')], 'w')
    refused(sandbox, archive, r"'\.\.'")


def test_absolute_paths_are_refused(sandbox):
    outside = sandbox / 'absolute_escape.txt'
    for name in (str(outside), '//server/share/x', 'C:/Windows/x', 'C:\\x'):
        archive = make_tar(sandbox / 'archives' / 'evil.tar.gz', [file_member(name, b'x')])
        refused(sandbox, archive, 'absolute path')
    assert not outside.exists()


@pytest.mark.parametrize('linkname', ['/etc/passwd', '../../outside', 'model.pb'])
def test_symlinks_are_refused_wherever_they_point(sandbox, linkname):
    # Refusing even links that stay inside: a DeepRacer model has none, and the rule
    # "no links at all" leaves nothing to get wrong.
    archive = make_tar(sandbox / 'archives' / 'evil.tar.gz',
                       [*CONSOLE, special_member('agent/alias', tarfile.SYMTYPE, linkname)])
    refused(sandbox, archive, 'is a link')


def test_a_symlinked_folder_cannot_be_written_through(sandbox):
    outside = sandbox / 'outside'
    outside.mkdir()
    archive = make_tar(sandbox / 'archives' / 'evil.tar.gz',
                       [special_member('agent', tarfile.SYMTYPE, str(outside)),
                        file_member('agent/model.pb', GRAPH)])
    target = sandbox / 'dest' / 'model'
    with pytest.raises(ArchiveError, match='is a link'):
        extract_archive(archive, target)
    assert list(outside.iterdir()) == [] and not target.exists()


@pytest.mark.parametrize('linkname', ['/etc/passwd', 'model_metadata.json'])
def test_hardlinks_are_refused(sandbox, linkname):
    archive = make_tar(sandbox / 'archives' / 'evil.tar.gz',
                       [*CONSOLE, special_member('agent/hard', tarfile.LNKTYPE, linkname)])
    refused(sandbox, archive, 'is a link')


@pytest.mark.parametrize('kind', [tarfile.FIFOTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE])
def test_devices_and_fifos_are_refused(sandbox, kind):
    archive = make_tar(sandbox / 'archives' / 'evil.tar.gz',
                       [*CONSOLE, special_member('agent/dev', kind)])
    refused(sandbox, archive, 'not a regular file')


def test_a_repeated_name_is_refused(sandbox):
    archive = make_tar(sandbox / 'archives' / 'twice.tar.gz',
                       [*CONSOLE, file_member('agent/model.pb', b'second version')])
    refused(sandbox, archive, 'appears twice')


# --- archive bombs (limits set tiny so the test files stay tiny) ------------------------------

def test_a_member_over_the_size_limit_is_refused_from_its_header(sandbox):
    # 2 MB of zeros compresses to a few kB: the header size is what stops it.
    archive = make_tar(sandbox / 'archives' / 'bomb.tar.gz',
                       [file_member('agent/model.pb', bytes(2_000_000))])
    assert archive.stat().st_size < 20_000
    refused(sandbox, archive, 'over the limit', ExtractionLimits(max_member_bytes=1_000_000))


def test_a_header_claiming_a_huge_size_is_refused_before_any_data_is_read(sandbox):
    info = tarfile.TarInfo('agent/model.pb')
    info.size = 50 * 1024 ** 3  # 50 GB, but the archive holds only the header
    archive = sandbox / 'archives' / 'liar.tar'
    archive.write_bytes(info.tobuf(format=tarfile.PAX_FORMAT) + bytes(1024))
    refused(sandbox, archive, 'over the limit')


def test_a_header_bomb_is_stopped_by_the_decompressed_byte_cap(sandbox):
    # tarfile reads a PAX header into memory whole before yielding its member: 3 MB of
    # comment (a few kB compressed) must be stopped while decompressing, not after.
    info, data = file_member('model_metadata.json', METADATA)
    info.pax_headers = {'comment': 'x' * 3_000_000}
    archive = sandbox / 'archives' / 'pax.tar.gz'
    with tarfile.open(archive, 'w:gz', format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(data))
    assert archive.stat().st_size < 20_000
    refused(sandbox, archive, r'unpacks to more than \d+ bytes \(headers included\)',
            ExtractionLimits(max_members=10, max_total_bytes=100_000))


def test_too_many_members_are_refused(sandbox):
    members = [file_member(f'f{i}.txt', b'x') for i in range(6)]
    archive = make_tar(sandbox / 'archives' / 'many.tar.gz', members)
    refused(sandbox, archive, 'more than 5 members', ExtractionLimits(max_members=5))


def test_too_many_bytes_in_all_are_refused(sandbox):
    members = [file_member(f'f{i}.bin', bytes(400)) for i in range(3)]
    archive = make_tar(sandbox / 'archives' / 'wide.tar.gz', members)
    refused(sandbox, archive, 'more than 1000 bytes',
            ExtractionLimits(max_member_bytes=500, max_total_bytes=1000))


def test_a_stream_longer_than_its_header_is_stopped(tmp_path):
    # tarfile and zipfile never yield more than the header says; this checks our own
    # counting layer underneath them, with a stream that does.
    limits = ExtractionLimits(max_member_bytes=10_000, max_total_bytes=10_000)
    member = arc._Member(PurePosixPath('model.pb'), False, 100,
                         lambda: io.BytesIO(bytes(5_000)))
    budget = arc._Budget(limits)
    budget.admit(member.path, member.size)
    with pytest.raises(ArchiveError, match='more bytes than its header'):
        arc._write_member(member, tmp_path, budget)


def test_zip_whose_directory_understates_a_member_is_refused(sandbox):
    archive = make_zip(sandbox / 'archives' / 'liar.zip',
                       [('model_metadata.json', METADATA, 0o100644),
                        ('agent/model.pb', bytes(200_000), 0o100644)])
    data = bytearray(archive.read_bytes())
    # Rewrite the uncompressed size of agent/model.pb in both headers to 1000 bytes.
    real_size = (200_000).to_bytes(4, 'little')
    assert data.count(real_size) == 2
    archive.write_bytes(bytes(data).replace(real_size, (1000).to_bytes(4, 'little')))
    refused(sandbox, archive, 'cannot extract|more bytes')


# --- hostile and broken zips, and things that are not archives ------------------------------

@pytest.mark.parametrize('name, mode, match', [
    ('../escaped.txt', 0o100644, r"'\.\.'"),
    ('/abs_escape.txt', 0o100644, 'absolute path'),
    ('agent/alias', 0o120777, 'is a link'),
    ('agent/fifo', 0o010644, 'not a regular file'),
])
def test_hostile_zip_members_are_refused(sandbox, name, mode, match):
    archive = make_zip(sandbox / 'archives' / 'evil.zip',
                       [('model_metadata.json', METADATA, 0o100644),
                        (name, b'/etc/passwd', mode)])
    refused(sandbox, archive, match)


def test_too_many_zip_members_are_refused_from_the_directory(sandbox):
    archive = make_zip(sandbox / 'archives' / 'many.zip',
                       [(f'f{i}', b'x', 0o100644) for i in range(4)])
    refused(sandbox, archive, 'more than 3 members', ExtractionLimits(max_members=3))


def test_truncated_archive_is_refused_and_cleaned_up(sandbox):
    good = make_tar(sandbox / 'archives' / 'good.tar.gz',
                    [file_member('model_metadata.json', METADATA),
                     file_member('agent/model.pb', os.urandom(100_000))])
    truncated = sandbox / 'archives' / 'truncated.tar.gz'
    truncated.write_bytes(good.read_bytes()[:60_000])
    refused(sandbox, truncated, 'cannot extract')


def test_something_that_is_not_an_archive_is_refused(sandbox):
    not_archive = sandbox / 'archives' / 'model.tar.gz'
    not_archive.write_bytes(b'<html>404 not found</html>')
    refused(sandbox, not_archive, 'is not a tar')
    refused(sandbox, sandbox / 'archives' / 'missing.tar.gz', 'is not a file')


@given(st.lists(st.sampled_from(['..', '.', '', 'a', 'b.pb', '\\', '/', 'C:', '...', '..a']),
                min_size=1, max_size=6))
def test_member_paths_that_are_accepted_stay_inside(parts):
    name = '/'.join(parts)
    try:
        path = safe_member_path(name)
    except ArchiveError:
        return
    root = Path('/sandbox/target')
    resolved = Path(os.path.normpath(root.joinpath(*path.parts)))
    assert root in resolved.parents
    assert '..' not in path.parts and not path.is_absolute()


# --- finding the model in an extracted folder ------------------------------------------------

def tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_console_layout_is_found(tmp_path):
    found = locate_model(tree(tmp_path, {'model_metadata.json': METADATA,
                                         'agent/model.pb': GRAPH}))
    assert found.model_file == tmp_path / 'agent' / 'model.pb' and not found.is_onnx
    assert found.metadata_file == tmp_path / 'model_metadata.json'


def test_onnx_is_preferred_over_a_graph_beside_it(tmp_path):
    found = locate_model(tree(tmp_path, {'model_metadata.json': METADATA,
                                         'agent/model.pb': GRAPH, 'model.onnx': b'o'}))
    assert found.is_onnx and found.model_file.name == 'model.onnx'


def test_metadata_one_folder_down_is_tolerated(tmp_path):
    found = locate_model(tree(tmp_path, {'my_model/model_metadata.json': METADATA,
                                         'my_model/agent/model.pb': GRAPH}))
    assert found.metadata_file == tmp_path / 'my_model' / 'model_metadata.json'


@pytest.mark.parametrize('files, match', [
    ({'model_metadata.json': METADATA, 'agent/model.pb': GRAPH, 'agent/old/model.pb': GRAPH},
     r'several TensorFlow graphs .*agent/model\.pb, agent/old/model\.pb'),
    ({'model_metadata.json': METADATA, 'a.onnx': b'', 'b/c.onnx': b''},
     r'several ONNX models.*a\.onnx, b/c\.onnx'),
    ({'agent/model.pb': GRAPH}, 'no model_metadata.json'),
    ({'agent/model.pb': GRAPH, 'a/b/model_metadata.json': METADATA},
     r'found only deeper: a/b/model_metadata\.json'),
    ({'agent/model.pb': GRAPH, 'a/model_metadata.json': METADATA,
      'b/model_metadata.json': METADATA}, 'several model_metadata.json'),
    ({'model_metadata.json': METADATA, 'readme.txt': b''}, 'neither a .onnx nor'),
])
def test_ambiguous_or_incomplete_models_are_named(tmp_path, files, match):
    with pytest.raises(ArchiveError, match=match):
        locate_model(tree(tmp_path, files))


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match='max_members'):
        ExtractionLimits(max_members=0)
