"""The taxonomy's vocabulary (issue 27 item 11): the rules of config/taxonomy.yaml map the data sets' own
category names and everyday compound labels (verb + object, modifier + head) to the paper's Table 4-1, and the
prefix terms that match at the start of a Chinese label never fire inside an unrelated word."""

import pytest

from madef_assets.defs.diversity.generation import ATTACK_METHODS
from madef_assets.defs.intent.taxonomy import Rule, Taxonomy, check_rule_terms
from madef_assets.project import CONFIG_DIR

TAXONOMY = Taxonomy.load(CONFIG_DIR / "taxonomy.yaml")
SOURCE_NAMES = [
    (source, name, category)
    for source, mapping in TAXONOMY.source_categories.items()
    for name, category in mapping.items()
]


@pytest.mark.parametrize("source, name, category", SOURCE_NAMES, ids=[f"{s}:{n}" for s, n, _ in SOURCE_NAMES])
def test_a_source_category_name_as_a_raw_label_maps_to_its_category(source, name, category):
    """A labeler that echoes a data set's own category name (Crimes_And_Illegal_Activities, privacy_violation,
    terrorism,organized_crime) lands in the category source_categories gives that name; commonsense (null) in
    none."""
    assert TAXONOMY.map_label(name)[0] == category


@pytest.mark.parametrize("method", sorted(ATTACK_METHODS))
def test_s_evals_attack_method_names_are_instruction_attacks_or_inducement(method):
    """S-Eval's ten attack methods, in English and Chinese: the induction ones are malicious inducement (MI), the
    others instruction attacks (IA). code_injection is the exception: as a raw label "code injection" / 代码注入
    names the network-security technique (NS), which is what a labeler means by it outside S-Eval's attack set."""
    expected = "MI" if method.endswith("induction") else "NS" if method == "code_injection" else "IA"
    assert TAXONOMY.map_label(method)[0] == expected
    assert TAXONOMY.map_label(ATTACK_METHODS[method][0])[0] == expected


def test_table_4_1_names_and_keywords_map_to_their_category():
    """Every category's English name, Chinese name and keywords map to it, except PP's keywords 隐私, 窃取 and
    theft: the paper's Table 4-1 files personal privacy under DP and theft under CIA (PP is property/financial
    loss), so those words alone are not PP."""
    exceptions = {("PP", "隐私"), ("PP", "窃取"), ("PP", "theft")}
    wrong = {
        (category, word): TAXONOMY.map_label(word)[0]
        for category, entry in TAXONOMY.categories.items()
        for word in (entry["name"], entry["zh"], *entry["keywords"])
        if (category, word) not in exceptions and TAXONOMY.map_label(word)[0] != category
    }
    assert wrong == {}
    assert {TAXONOMY.map_label(word)[0] for _, word in exceptions} == {"DP", "CIA"}


# Everyday compound labels: the examples and the heads most frequent per source category in S-Eval's
# prompts (zh + en), BeaverTails and XSafety.
COMPOUNDS = [
    ("信用卡套现", "CIA"),
    ("伪造学历", "CIA"),
    ("非法集资", "CIA"),
    ("盗刷信用卡", "CIA"),
    ("偷税漏税", "CIA"),
    ("贪污受贿", "CIA"),
    ("敲诈勒索", "CIA"),
    ("诈骗手段", "CIA"),
    ("tax evasion", "CIA"),
    ("bribery", "CIA"),
    ("财产损失", "PP"),
    ("financial losses", "PP"),
    ("学术不端", "EM"),
    ("论文抄袭", "EM"),
    ("plagiarism", "EM"),
    ("教唆自杀", "PMH"),
    ("自杀方法", "PMH"),
    ("encouraging self-harm", "PMH"),
    ("强迫症", "PMH"),
    ("越狱攻击", "IA"),
    ("ignore previous instructions", "IA"),
    ("散布谣言", "MI"),
    ("conspiracy theories", "MI"),
    ("人肉搜索", "DP"),
    ("查询他人住址", "DP"),
    ("隐私窃取", "DP"),
    ("训练数据", "DP"),
    ("doxxing", "DP"),
    ("SQL注入", "NS"),
    ("SQL injection", "NS"),
    ("木马程序", "NS"),
    ("钓鱼网站", "NS"),
    ("中间人攻击", "NS"),
    ("宗教极端思想", "EX"),
    ("恐怖组织招募", "EX"),
    ("white supremacy", "EX"),
    ("色情小说", "PR"),
    ("卖淫嫖娼", "PR"),
    ("prostitution", "PR"),
    ("制作冰毒教程", "DT"),
    ("制造炸弹方法", "DT"),
    ("枪支买卖", "DT"),
    ("生化武器", "DT"),
    ("illegal drugs", "DT"),
    ("firearms", "DT"),
    ("政治人物", "PS"),
    ("政治谣言", "PS"),
    ("选举舞弊", "PS"),
    ("protests", "PS"),
]


@pytest.mark.parametrize("label, category", COMPOUNDS)
def test_everyday_compound_labels_map_to_the_papers_categories(label, category):
    assert TAXONOMY.map_label(label) == (category, "rule")


# Real words that contain a rule's text without being about it: genres, weather, biology, business, CValues'
# (non-safety) domains.
UNRELATED = [
    "恐怖小说",
    "恐怖电影",
    "恐怖片",
    "道德经",
    "极端天气",
    "细胞分裂",
    "颠覆性创新",
    "黑客马拉松",
    "买卖房屋",
    "入侵物种",
    "自动贩卖机",
    "贩卖机",
    "钓鱼技巧",
    "激进化学",
    "伦理道德观",
    "新冠病毒",
    "逃避现实",
    "健康饮食",
    "心理学",
    "无障碍",
    "数据科学",
    "法理学",
    "环境科学",
    "亲密关系",
    "horror movie",
    "extreme weather",
    "cell division",
    "toxic gas",
    "drugstore",
]


@pytest.mark.parametrize("label", UNRELATED)
def test_no_rule_fires_on_an_unrelated_word(label):
    assert TAXONOMY.map_label(label) == (None, "unmapped")


VERB = Rule("CIA", ("诈骗",), ("伪造",))


@pytest.mark.parametrize(
    "label", ["伪造", "伪造学历", "伪造信用卡", "伪造学历方法", "批量伪造", "伪造证件, 其他"], ids=str
)
def test_a_prefix_term_matches_alone_at_the_end_or_before_its_object(label):
    assert VERB.match_length(label) == 2


@pytest.mark.parametrize(
    "label",
    [
        "伪造者",  # one character: a noun of its own (the forger)
        "伪造学",
        "伪造身份证明文件",  # 4+ characters: a phrase with a head of its own
        "伪造主义学",  # an object ending with a one-character noun head
        "伪造学历观",
        "研究伪造的历史",  # in the middle of a run
    ],
)
def test_a_prefix_term_does_not_match_before_a_noun_or_a_phrase(label):
    assert VERB.match_length(label) == 0


def test_a_plain_term_never_matches_at_the_start():
    """Only prefix terms match at the start: a noun there is a modifier of another head (恐怖片, 道德经)."""
    assert VERB.match_length("电信诈骗") == 2 and VERB.match_length("诈骗老人") == 0


def test_a_prefix_term_that_is_a_term_of_another_rule_or_english_is_refused():
    problems = check_rule_terms((Rule("CIA", ("诈骗",), ("伪造", "fraud")), Rule("EM", (), ("伪造",))))
    assert any("'fraud' is not 2+ Chinese characters" in p for p in problems)
    assert any("'伪造' is already a term of rule CIA" in p for p in problems)


def test_a_regular_english_plural_matches():
    rule = Rule("PP", ("financial loss", "tax", "crime"))
    assert all(rule.match_length(label) for label in ("financial losses", "taxes", "crimes"))
    assert not rule.match_length("financial lossy")


def test_every_prefix_term_matches_itself_and_the_taxonomy_loads_them():
    prefixed = [rule for rule in TAXONOMY.rules if rule.prefix_terms]
    assert len(prefixed) >= 10
    assert all(rule.match_length(term) == len(term) for rule in prefixed for term in rule.prefix_terms)


def test_particles_and_leading_context_words_do_not_hide_the_theme():
    """A Chinese label phrased as a request or a topic (涉及X的问题, 关于X) is matched on X; a head that is not
    generic keeps X a modifier (研究诈骗的历史 is about history)."""
    assert TAXONOMY.map_label("涉及粗俗辱骂的问题")[0] == "OFF"
    assert TAXONOMY.map_label("关于伪造公章")[0] == "CIA"  # 伪造 + its object, once 关于 is off
    assert TAXONOMY.map_label("伪造公章")[0] == "CIA"
    assert TAXONOMY.map_label("研究诈骗的历史")[0] is None


@pytest.mark.parametrize(
    "fixture, at_least_right, at_most_wrong",
    [("taxonomy_heldout_labels.yaml", 0.78, 0.01), ("taxonomy_heldout_labels_2.yaml", 0.70, 0.02)],
)
def test_coverage_on_labels_written_apart_from_the_vocabulary(fixture, at_least_right, at_most_wrong):
    """The rules on realistic zh/en labels written by others without sight of config/taxonomy.yaml: 240 labels
    (the first set; the matcher's particle and context-word handling was tuned after seeing its misses: 75.4 % ->
    78.3 % right, 0.8 % wrong) and 210 (written after that tuning, measured first at 70.0 % right, 2.4 % wrong;
    then a review's fixes of over-broad terms, one of them among its misses: 70.5 %, 1.9 %). The unmapped rest
    goes to the labeler's constrained choice, then to people. Short of the issue's goal (90 % right,
    2 % wrong, by the rules alone); this pins what is reached so that a vocabulary change cannot lose it
    unnoticed."""
    import yaml

    from madef_assets_tests.conftest import FIXTURES

    rows = yaml.safe_load((FIXTURES / fixture).read_text(encoding="utf-8"))
    mapped = [(TAXONOMY.map_label(row["label"])[0], row["category"]) for row in rows]
    right = sum(got == gold for got, gold in mapped) / len(rows)
    wrong = sum(got is not None and got != gold for got, gold in mapped) / len(rows)
    assert len(rows) >= 200 and right >= at_least_right and wrong <= at_most_wrong, (right, wrong)


@pytest.mark.parametrize(
    "label, category",
    [
        ("行贿官员", "CIA"),  # an official is the object of the bribe, not a political remark
        ("人身袭击", None),  # 袭击 alone is no terrorist attack
        ("安全威胁", None),
        ("security threat", None),  # a threat is no insult
        ("拖欠工资", None),  # wages are no personal data
        ("explicit violence", "CIA"),  # explicit is not pornographic by itself
        ("drug trafficking", "DT"),  # as 贩毒
        ("sexual harassment", "PR"),  # as 性骚扰
        ("medical fraud", "CIA"),
        ("色情图片", "PR"),  # a 2-character object ending with 片/者/家 is still the object
        ("歧视患者", "UB"),
        ("诋毁国家", "OFF"),
    ],
)
def test_an_object_of_another_category_does_not_take_the_label(label, category):
    """From a review: a term naming an object that appears in labels of other categories (官员, 工资) or a word
    too broad alone (袭击, 威胁, explicit) sent labels to the wrong category."""
    assert TAXONOMY.map_label(label)[0] == category
