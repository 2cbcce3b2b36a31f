"""Write medqa_sample.xlsx: a small MedQA-style sheet (问题 / 答案 / 科室) for `data convert`.

Run from the repository root: `python examples/medqa/make_sample.py`. The answers are general health
information for a demo dataset, not medical advice.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import openpyxl
from openpyxl.styles import Alignment, Font

ROWS = [  # (问题, 答案, 科室)
    (
        "感冒了应该吃抗生素吗？",
        "普通感冒多由病毒引起，抗生素对病毒无效。一般多休息、多喝水即可；如果高烧不退或症状加重，请及时就医。",
        "呼吸内科",
    ),
    (
        "成年人正常体温是多少？",
        "腋下测量的正常体温一般在36.0℃到37.2℃之间，超过37.3℃可视为发热。",
        "全科",
    ),
    (
        "高血压患者饮食要注意什么？",
        "建议少盐（每天不超过5克）、少油，多吃蔬菜水果，控制体重，限制饮酒，并按医嘱规律服药。",
        "心内科",
    ),
    (
        "糖尿病的典型症状有哪些？",
        "典型表现为“三多一少”：多饮、多食、多尿和体重减轻。出现这些症状应到医院检查血糖。",
        "内分泌科",
    ),
    (
        "被猫抓伤后需要打狂犬疫苗吗？",
        "被猫抓伤出血或皮肤破损，应立即用肥皂水和清水冲洗伤口至少15分钟，并尽快到医院评估是否需要接种狂犬疫苗。",
        "急诊科",
    ),
    (
        "孩子发烧38.5℃怎么办？",
        "可以适当减少衣物、补充水分，按说明书剂量使用退热药；若精神差、持续高热或抽搐，应立即就医。",
        "儿科",
    ),
    (
        "长期失眠怎么调理？",
        "保持规律作息，睡前避免咖啡、浓茶和电子屏幕，适当运动；持续失眠影响生活时，建议到睡眠门诊就诊。",
        "神经内科",
    ),
    (
        "胃痛可以自己吃止痛药吗？",
        "不建议随意服用止痛药，部分止痛药会刺激胃黏膜。胃痛反复或剧烈时应就医明确病因。",
        "消化内科",
    ),
    (
        "每天应该喝多少水？",
        "一般成年人每天饮水约1500到1700毫升，天热或运动出汗时需要适当增加。",
        "全科",
    ),
    (
        "扭伤脚踝后应该冷敷还是热敷？",
        "扭伤后48小时内宜冷敷以减轻肿胀，48小时后可改为热敷促进恢复；疼痛明显或无法行走时需拍片检查。",
        "骨科",
    ),
    (
        "什么是贫血？",
        "贫血是指血液中红细胞或血红蛋白低于正常水平，常见表现有乏力、面色苍白、头晕等，需要查明原因后治疗。",
        "血液科",
    ),
    (
        "近视眼可以治愈吗？",
        "目前真性近视无法通过药物治愈，可以通过配戴眼镜矫正；成年后度数稳定者可咨询医生评估屈光手术。",
        "眼科",
    ),
    (
        "口腔溃疡反复发作怎么办？",
        "注意口腔卫生，少吃辛辣刺激食物，保证睡眠；溃疡超过两周不愈合应到口腔科检查。",
        "口腔科",
    ),
    (
        "吸烟对身体有哪些危害？",
        "吸烟会增加肺癌、慢性阻塞性肺病、冠心病和脑卒中等疾病的风险，戒烟在任何年龄都有益处。",
        "呼吸内科",
    ),
    (
        "体检发现尿酸高怎么办？",
        "少吃动物内脏、海鲜和浓肉汤，限制饮酒和含糖饮料，多喝水；数值明显升高或有关节疼痛时请就医。",
        "风湿免疫科",
    ),
    (
        "皮肤过敏起红疹应该怎么处理？",
        "避免接触可疑过敏原，不要抓挠；症状轻时可在医生指导下使用抗过敏药，出现呼吸困难需立即急诊。",
        "皮肤科",
    ),
    (
        "怀孕期间可以吃药吗？",
        "孕期用药需谨慎，很多药物可能影响胎儿，任何药物都应在医生指导下使用。",
        "妇产科",
    ),
    (
        "运动后肌肉酸痛正常吗？",
        "运动后一到两天出现的肌肉酸痛通常是正常现象，适当休息和拉伸即可缓解，一般几天内消退。",
        "康复科",
    ),
    (
        "胸口突然剧烈疼痛怎么办？",
        "突发胸痛可能是心梗等急症信号，应立即停止活动并拨打急救电话120，不要自行开车去医院。",
        "急诊科",
    ),
    (
        "如何预防流感？",
        "每年接种流感疫苗，勤洗手，流感季节少去人群密集场所，咳嗽打喷嚏时遮住口鼻。",
        "感染科",
    ),
]


def main(out: Path = Path(__file__).with_name("medqa_sample.xlsx")) -> Path:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "MedQA"
    sheet.append(["问题", "答案", "科室"])
    for row in ROWS:
        sheet.append(list(row))
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for column, width in zip("ABC", (32, 80, 12), strict=True):
        sheet.column_dimensions[column].width = width
    for row in sheet.iter_rows(min_row=2):
        for cell in row:
            cell.alignment = Alignment(wrap_text=True, vertical="top")
    workbook.properties.creator = "finetune examples"
    buffer = io.BytesIO()
    workbook.save(buffer)
    out.write_bytes(_reproducible(buffer.getvalue()))
    return out


def _reproducible(xlsx: bytes) -> bytes:
    """Fixed timestamps inside the file and its zip entries, so regenerating gives the same bytes."""
    stamp = "2025-01-01T00:00:00Z"
    source, target = zipfile.ZipFile(io.BytesIO(xlsx)), io.BytesIO()
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename == "docProps/core.xml":
                text = data.decode()
                for tag in ("dcterms:created", "dcterms:modified"):
                    start = text.index(">", text.index(f"<{tag}")) + 1
                    text = text[:start] + stamp + text[text.index(f"</{tag}>"):]
                data = text.encode()
            archive.writestr(zipfile.ZipInfo(info.filename, date_time=(2025, 1, 1, 0, 0, 0)), data,
                             compress_type=zipfile.ZIP_DEFLATED)
    return target.getvalue()


if __name__ == "__main__":
    print(f"wrote {main()}")
