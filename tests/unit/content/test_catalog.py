import json

import pytest

from appliance.content import catalog

# The shape of the Kiwix catalog's /catalog/v2/entries (libkiwix's OPDS template).
OPDS = """<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:dc="http://purl.org/dc/terms/"
      xmlns:opds="https://specs.opds.io/opds-1.2" xmlns:thr="http://purl.org/syndication/thread/1.0">
  <id>5e1f4b3c-0000-0000-0000-000000000000</id>
  <link rel="self" href="/catalog/v2/entries"
        type="application/atom+xml;profile=opds-catalog;kind=acquisition"/>
  <title>All Entries</title>
  <updated>2025-01-01T00:00:00Z</updated>
  <totalResults>2</totalResults><startIndex>0</startIndex><itemsPerPage>2</itemsPerPage>
  <entry>
    <id>urn:uuid:1a2b3c4d-0000-0000-0000-000000000001</id>
    <title>Ray Charles</title>
    <updated>2024-01-01T00:00:00Z</updated>
    <summary>Wikipedia articles about Ray Charles</summary>
    <language>eng</language>
    <name>wikipedia_en_ray_charles</name>
    <flavour>maxi</flavour>
    <category>wikipedia</category>
    <tags>wikipedia;_category:wikipedia;_pictures:no</tags>
    <articleCount>129</articleCount>
    <mediaCount>24</mediaCount>
    <link rel="http://opds-spec.org/image/thumbnail" href="/catalog/v2/illustration/1a2b/?size=48"
          type="image/png;width=48;height=48;scale=1"/>
    <link type="text/html" href="/content/wikipedia_en_ray_charles_maxi_2024-01"/>
    <author><name>Wikipedia</name></author>
    <publisher><name>Kiwix</name></publisher>
    <dc:issued>2024-01-01T00:00:00Z</dc:issued>
    <link rel="http://opds-spec.org/acquisition/open-access" type="application/x-zim"
          href="/zim/wikipedia/wikipedia_en_ray_charles_maxi_2024-01.zim.meta4" length="569304"/>
  </entry>
  <entry>
    <id>urn:uuid:1a2b3c4d-0000-0000-0000-000000000002</id>
    <title>Википедия</title>
    <language>rus</language>
    <name>wikipedia_ru_top</name>
    <category>wikipedia</category>
    <link rel="http://opds-spec.org/acquisition/open-access" type="application/x-zim"
          href="https://download.example/wikipedia_ru_top.zim.meta4" length="1000"/>
  </entry>
</feed>""".encode()

METALINK = b"""<?xml version="1.0" encoding="UTF-8"?>
<metalink xmlns="urn:ietf:params:xml:ns:metalink">
  <generator>MirrorBrain/2.19.0</generator>
  <published>2025-01-01T00:00:00Z</published>
  <file name="wikipedia_en_ray_charles_maxi_2024-01.zim">
    <size>600000</size>
    <hash type="md5">0123456789abcdef0123456789abcdef</hash>
    <hash type="sha-1">0123456789abcdef0123456789abcdef01234567</hash>
    <hash type="sha-256">""" + b"ab" * 32 + b"""</hash>
    <pieces length="262144" type="sha-1">
      <hash>""" + b"11" * 20 + b"""</hash>
      <hash>""" + b"22" * 20 + b"""</hash>
      <hash>""" + b"33" * 20 + b"""</hash>
    </pieces>
    <url location="de" priority="2">https://mirror2.example/x.zim</url>
    <url location="fr" priority="1">https://mirror1.example/x.zim</url>
  </file>
</metalink>"""


def test_opds_books_in_the_kiwix_shape():
    books = catalog.parse_opds(OPDS, "https://library.example/catalog/v2/entries")
    assert [b.name for b in books] == ["wikipedia_en_ray_charles", "wikipedia_ru_top"]
    ray = books[0]
    assert ray.url == "https://library.example/zim/wikipedia/wikipedia_en_ray_charles_maxi_2024-01.zim.meta4"
    assert (ray.size, ray.language, ray.subject, ray.flavour) == (569304, "en", "wikipedia", "maxi")
    assert books[1].language == "ru" and books[1].title == "Википедия"


def test_metalink_pieces_and_mirrors_by_priority():
    link = catalog.parse_metalink(METALINK)
    assert link.size == 600000 and link.sha256 == "ab" * 32
    assert link.urls == ("https://mirror1.example/x.zim", "https://mirror2.example/x.zim")
    assert (link.piece_length, link.piece_type, len(link.pieces)) == (262144, "sha-1", 3)


@pytest.mark.parametrize("data", [
    b"<feed/>", b"not xml", b'<!DOCTYPE x [<!ENTITY a "b">]><feed xmlns="http://www.w3.org/2005/Atom"/>'])
def test_bad_feeds_are_refused(data):
    with pytest.raises(catalog.CatalogError):
        catalog.parse_opds(data)


def test_metalink_with_the_wrong_number_of_pieces_is_refused():
    with pytest.raises(catalog.CatalogError, match="pieces"):
        catalog.parse_metalink(METALINK.replace(b"<size>600000</size>", b"<size>9000000</size>"))


def test_sha256_file():
    text = f"{'cd' * 32}  wikipedia_en_ray_charles.zim\n"
    assert catalog.parse_sha256_file(text, "wikipedia_en_ray_charles.zim") == "cd" * 32
    with pytest.raises(catalog.CatalogError):
        catalog.parse_sha256_file("nothing here")


def manifest(**changes):
    doc = {"format": "classroom-edge/pack", "version": 1, "name": "fractions", "title": "Fractions",
           "index": "index.html", "files": [{"path": "index.html", "sha256": "aa" * 32, "size": 10}]}
    doc.update(changes)
    return json.dumps(doc).encode()


def test_pack_manifest_round_trip():
    parsed = catalog.parse_pack_manifest(manifest())
    assert parsed.files[0].path == "index.html"
    again = catalog.parse_pack_manifest(catalog.pack_manifest_json(parsed))
    assert again.files == parsed.files


@pytest.mark.parametrize("changes, message", [
    ({"version": 2}, "version"),
    ({"format": "other"}, "format"),
    ({"files": [{"path": "../etc/passwd", "sha256": "aa" * 32, "size": 1}]}, "relative"),
    ({"files": [{"path": "a//b", "sha256": "aa" * 32, "size": 1}]}, "relative"),
    ({"files": [{"path": "index.html", "sha256": "zz", "size": 1}]}, "hex"),
    ({"index": "missing.html"}, "index"),
    ({"name": "../x"}, "name"),
])
def test_bad_pack_manifests_say_why(changes, message):
    with pytest.raises(catalog.CatalogError, match=message):
        catalog.parse_pack_manifest(manifest(**changes))


def test_bundle_needs_checksums_for_archives():
    doc = {"format": "classroom-edge/bundle", "version": 1,
           "items": [{"name": "a", "kind": "zim", "url": "a.zim"}]}
    with pytest.raises(catalog.CatalogError, match="sha256"):
        catalog.parse_bundle(json.dumps(doc).encode())
    doc["items"][0]["sha256"] = "ef" * 32
    assert catalog.parse_bundle(json.dumps(doc).encode(), "http://x/b.json")[0].url == "http://x/a.zim"
